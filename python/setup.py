"""Builds libchorus.so from the Swift package one folder up (`swift build -c release --product chorus`)
and installs it inside the `chorus` package, so `pip install ./python` needs no prebuilt binary and
no library path set by hand (the library finds the Swift runtime through its RUNPATH)."""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        build = ["swift", "build", "-c", "release", "--product", "chorus"]
        subprocess.check_call(build, cwd=ROOT)
        binaries = subprocess.check_output(build + ["--show-bin-path"], cwd=ROOT, text=True).strip()
        target = os.path.join(self.build_lib, "chorus")
        os.makedirs(target, exist_ok=True)
        shutil.copy2(os.path.join(binaries, "libchorus.so"), os.path.join(target, "libchorus.so"))


class NativeDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform, not as pure Python."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=NativeDistribution)
