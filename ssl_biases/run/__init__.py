"""A run's life from start to finish, under the CLI or any ``Trainer``.

- :mod:`~ssl_biases.run.status`: ``status.json``, the completion marker of runs and sweep cells;
- :mod:`~ssl_biases.run.resume`: resuming into the same run directory, exactly;
- :mod:`~ssl_biases.run.checkpoint`: the one checkpoint reader (validate, export, analyze);
- :mod:`~ssl_biases.run.faults`: atomic checkpoints, ``last.ckpt``, signals, NaN guard;
- :mod:`~ssl_biases.run.csv_logger`: ``metrics.csv``, continued on a resume;
- :mod:`~ssl_biases.run.callbacks`: what the CLI adds to every run, and its end;
- :mod:`~ssl_biases.run.export`: a backbone out of the framework and back;
- :mod:`~ssl_biases.run.sync_batchnorm`: synchronised BatchNorm on CPU (gloo) as well.

Nothing is imported here, so ``ssl_biases.load_backbone`` stays free of Lightning.
"""
