"""The ``biounet`` command: one module per subcommand, each parsing its arguments, calling the library
(:mod:`biounet.workflows`, :mod:`biounet.infer.files`, :mod:`biounet.metrics.evaluate`) and printing.

- ``main``: the parser, exit codes and one-line errors; ``train``, ``plan``, ``predict``, ``evaluate``,
  ``export``, ``info``: the subcommands.
"""
