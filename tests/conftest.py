"""Shared test set-up: one torch thread. The unit tests run tiny models whose operations are too
small to gain from threads; on a busy 2-core machine, threads made them up to 20x slower."""

import torch

torch.set_num_threads(1)
