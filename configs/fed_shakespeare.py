"""Federated next-character prediction on Shakespeare by speaking role (McMahan et al. 2017).

    python -m bigmodel_jax.federated --config configs/fed_shakespeare.py --workdir runs/fed_avg
    python -m bigmodel_jax.federated --config configs/fed_shakespeare.py:fedsgd --workdir runs/fed_sgd
    python -m bigmodel_jax.federated --config configs/fed_shakespeare.py --config.data.partition=iid ...
    python -m bigmodel_jax.federated --config configs/fed_shakespeare.py:dp --workdir runs/fed_dp

One client per (play, role) with >= 2 lines (1,273 clients from our 38 plays; the paper's 1,146 from
37), each client's first 80% of lines for training and the rest for test; test accuracy is over
every client's test windows (or the first fed.eval_examples of them in a fixed shuffle).

Variants: `fedsgd` (E = 1, one full-batch step per client and round), `fedprox` (mu = 0.01),
`fedadam` (server Adam, Reddi et al. 2021), `dp` (DP-FedAvg: Poisson sampling, clip 0.5, noise 1.0).
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "causal_lm"
    c.compilation_cache_dir = "~/.cache/bigmodel_jax/jax_cache"
    # a small character GPT in place of the paper's 2-layer LSTM of 256 units (about 0.8M parameters)
    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0, num_layers=2, width=128, num_heads=4, num_kv_heads=0, mlp_dim=512, max_len=80,
        positions="learned", rope_theta=10000.0, norm="layernorm", activation="gelu", use_bias=True,
        tie_embeddings=True, dropout=0.0, dtype="float32", remat="none", attention_impl="plain",
        scan_layers=False,
    ))
    c.data = ml_collections.ConfigDict(dict(
        plays_dir="", tfds_dir="~/.cache/bigmodel_jax/tfds",
        seq_len=80,  # the paper's 80 characters
        partition="role",  # "role": the natural non-IID clients; "iid": the same lines dealt evenly
    ))
    c.fed = ml_collections.ConfigDict(dict(
        algorithm="fedavg",  # "fedsgd" | "fedavg" | "fedprox"
        rounds=100,
        client_fraction=0.05,  # C: clients per round as a fraction of all (the paper: 0.1)
        local_epochs=1,  # E
        local_batch=10,  # B, in examples (windows here); 0 = the client's whole data in one step
        client_lr=1.0,
        client_optimizer="sgd",  # "sgd" (the paper's) | "adam" (fresh state each round)
        prox_mu=0.0,  # FedProx's mu (algorithm "fedprox")
        micro_batch=64,  # examples per gradient chunk inside a local step (memory only; 0 = the whole batch)
        group_size=16,  # most clients per compiled call (a multiple of the devices on the clients axis)
        group_examples=2048,  # a group of large clients holds fewer of them: about this many examples
        min_examples=8,  # a group is padded to a power of two of examples, at least this
        server_optimizer="sgd",  # "sgd" (rate 1: FedAvg's average) | "adam" | "yogi"
        server_lr=1.0, server_momentum=0.0, server_b1=0.9, server_b2=0.99, server_eps=1e-3,
        eval_every=5, eval_examples=4096,  # 0 = every test example
        target_accuracy=0.0,  # the log names the first round that reaches it (0 = none)
        checkpoint_every=10, keep_checkpoints=2,
    ))
    c.dp = ml_collections.ConfigDict(dict(
        clip=0.0,  # S, the L2 bound on a client's update; 0 = no DP
        noise_multiplier=0.0,  # z: noise std z * S on the sum of clipped updates
        delta=0.0,  # 0 = 1 / (number of clients)^1.1
    ))
    c.parallel = ml_collections.ConfigDict(dict(clients=-1))  # the `clients` mesh axis: -1 = every device

    if variant == "fedsgd":
        c.fed.update(algorithm="fedsgd", local_batch=0, client_lr=1.0)
    elif variant == "fedprox":
        c.fed.update(algorithm="fedprox", prox_mu=0.01)
    elif variant == "fedadam":
        c.fed.update(server_optimizer="adam", server_lr=1e-2, client_lr=0.5)
    elif variant == "dp":
        c.dp.update(clip=0.5, noise_multiplier=1.0)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of fed_shakespeare.py; valid: '', fedsgd, fedprox, fedadam, dp")
    return c
