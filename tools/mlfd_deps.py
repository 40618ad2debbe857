#!/usr/bin/python3
"""mlfd_deps: checks that this Python has the modules tools/ and bench/ need (NumPy, torch,
torchvision, h5py), and prints one line per module with its version.

The scripts need the Debian interpreter /usr/bin/python3, for which scripts/install_deps.sh
installs python3-numpy, python3-torch, python3-torchvision and python3-h5py; another python3
first on PATH (pyenv, conda, a virtualenv) usually lacks them. Each script calls require() before
importing them, so a missing module ends the script with one line on stderr and exit status 1
instead of a traceback. This module itself uses only the standard library.

Usage: mlfd_deps.py            (exit 0 when every module imports, 1 otherwise)
"""

import sys

# module -> the Debian package scripts/install_deps.sh installs it from
PACKAGES = {"numpy": "python3-numpy", "torch": "python3-torch",
            "torchvision": "python3-torchvision", "h5py": "python3-h5py"}
INTERPRETER = "/usr/bin/python3"


def problem(module):
    """None when `module` imports, else one line saying what is wrong."""
    try:
        __import__(module)
        return None
    except ImportError:
        return ("needs the Python module '%s' (Debian package %s; scripts/install_deps.sh installs "
                "it) - run with %s" % (module, PACKAGES.get(module, "?"), INTERPRETER))
    except Exception as e:  # noqa: BLE001 - a broken install raises anything (OSError, AttributeError)
        first = (str(e).strip().splitlines() or [""])[0]
        return ("the Python module '%s' fails to import (%s: %s) - run with %s, where "
                "scripts/install_deps.sh installs %s" % (module, type(e).__name__, first, INTERPRETER,
                                                         PACKAGES.get(module, "?")))


def require(prog, modules):
    """Exits with status 1 and one line on stderr, '<prog>: error: needs the Python module ...',
    naming the first of `modules` that does not import."""
    for m in modules:
        why = problem(m)
        if why:
            sys.stderr.write("%s: error: %s\n" % (prog, why))
            sys.exit(1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["-h"] or argv == ["--help"]:
        print(__doc__.strip())
        return 0
    if argv:
        print("usage: mlfd_deps.py   (takes no arguments; --help explains)", file=sys.stderr)
        return 2
    ok = True
    print("python: %s (%s)" % (sys.executable, sys.version.split()[0]))
    for m in PACKAGES:
        why = problem(m)
        if why:
            ok = False
            print("%s: missing: %s" % (m, why))
        else:
            print("%s: %s" % (m, getattr(sys.modules[m], "__version__", "?")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
