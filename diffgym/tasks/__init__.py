"""Task-suite helpers: what one family of benchmark tasks needs beyond the core.

- :mod:`diffgym.tasks.mazes`: D4RL's maze2d evaluation task on gymnasium-robotics' PointMaze and maze
  geometry (needs ``pip install 'diffgym[maze]'``);
- :mod:`diffgym.tasks.plotting`: plans drawn over a maze, and animations of a plan being denoised;
- :mod:`diffgym.tasks.extras`: the optional packages and the one error naming their ``pip install``.

A dependency that only one task suite needs is an extra (``maze``, ``mpe``, ``metaworld`` in
``pyproject.toml``), imported on first use through :func:`diffgym.tasks.extras.import_extra`, whose
:class:`~diffgym.tasks.extras.MissingExtraError` names the ``pip install`` command. The
modules are not re-exported here: import them by name, so that importing this package needs no extra.
"""
