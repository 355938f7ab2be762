"""Train with Replacement Learning: `python train.py [group=option] [key=value ...]` (Hydra).

    python train.py                                   # resnet32, synthetic data, RepL ratio 0.25
    python train.py dataset=cifar10 model=resnet56 repl.ratio=0.4
    python train.py repl=none                         # plain backprop baseline
"""
from repl.cli import main

if __name__ == "__main__":
    main()
