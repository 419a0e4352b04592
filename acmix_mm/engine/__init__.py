from .cpu_distributed import AnyDeviceDistributedDataParallel, setup_cpu_distributed

__all__ = ['AnyDeviceDistributedDataParallel', 'setup_cpu_distributed']
