"""``torchrun ... -m training --config train.json [--resume latest]``: the training entry point (see training.trainer)."""
from training.trainer import main

if __name__ == "__main__":
    raise SystemExit(main())
