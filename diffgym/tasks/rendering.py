"""Rendering MuJoCo envs on a machine without a display (servers, CI, containers).

MuJoCo draws through OpenGL, whose backend is chosen by ``MUJOCO_GL`` when the first renderer is
made (and PyOpenGL's by ``PYOPENGL_PLATFORM`` when it is imported): ``glfw`` needs a display,
``egl`` a GPU driver (or Mesa's EGL with a usable device), ``osmesa`` only a CPU and the OSMesa
library (Debian/Ubuntu: ``apt install libosmesa6``). :func:`choose_headless_gl` picks one for a
machine without a display unless the user chose already; :func:`rendering_error` says what to do when
drawing still fails.

>>> choose_headless_gl({"MUJOCO_GL": "egl"})  # the user's choice stands
'egl'
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import MutableMapping

__all__ = ["choose_headless_gl", "rendering_error"]

HINT = (
    "MuJoCo could not draw without a display. Install OSMesa (Debian/Ubuntu: apt install libosmesa6) "
    "and run with MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa, or on a machine with a GPU driver use "
    "MUJOCO_GL=egl"
)


def choose_headless_gl(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) for a machine without a display; returns the backend.

    Left alone when ``MUJOCO_GL`` is set or a display exists (``DISPLAY``/``WAYLAND_DISPLAY``).
    Otherwise ``osmesa`` when the OSMesa library is installed (works everywhere, on the CPU), else
    ``egl``. Call it before the first MuJoCo env renders.
    """
    environ = os.environ if environ is None else environ
    if "MUJOCO_GL" in environ:
        return environ["MUJOCO_GL"]
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    backend = "osmesa" if ctypes.util.find_library("OSMesa") else "egl"
    environ["MUJOCO_GL"] = backend
    environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def rendering_error(error: Exception) -> RuntimeError:
    """The error to raise when an env's ``render()`` failed: what failed and how to fix it."""
    backend = os.environ.get("MUJOCO_GL", "glfw (the default)")
    return RuntimeError(
        f"rendering failed with MUJOCO_GL={backend} ({type(error).__name__}: {error}). {HINT}"
    )
