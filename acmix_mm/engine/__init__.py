from .cpu_distributed import AnyDeviceDistributedDataParallel, setup_cpu_distributed
from .run_config import add_common_args, load_run_config

__all__ = ['AnyDeviceDistributedDataParallel', 'setup_cpu_distributed', 'add_common_args',
           'load_run_config']
