import sys

from bigmodel_jax.federated.run import main

sys.exit(main())
