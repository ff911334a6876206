import sys

from bigmodel_jax import allocator

allocator.reexec()  # before jax loads: the allocator is fixed when a process starts (allocator.py)

from bigmodel_jax.federated.run import main  # noqa: E402

sys.exit(main())
