from .atomic_local_backend import AtomicLocalBackend, write_atomically
from .cpu_amp_optim_wrapper import CPUAmpOptimWrapper, configure_amp
from .cpu_distributed import AnyDeviceDistributedDataParallel, setup_cpu_distributed
from .exact_resume_hook import ExactResumeHook, enable_exact_resume
from .run_config import add_common_args, load_run_config

__all__ = ['AnyDeviceDistributedDataParallel', 'setup_cpu_distributed', 'add_common_args',
           'load_run_config', 'AtomicLocalBackend', 'write_atomically', 'CPUAmpOptimWrapper',
           'configure_amp', 'ExactResumeHook', 'enable_exact_resume']
