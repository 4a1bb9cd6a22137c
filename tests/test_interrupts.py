"""Signals that land while a native package is imported wait for the import to finish."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import FrameType

from fgar_cli import interrupts


def _module_frame(module_name: str) -> tuple[FrameType, dict[str, object]]:
    """The frame of module-level code run as the module `module_name`, and its namespace."""
    namespace: dict[str, object] = {"__name__": module_name}
    code = "import sys\nframe = sys._getframe()\ndef later():\n    return sys._getframe()\n"
    exec(compile(code, f"<{module_name}>", "exec"), namespace)
    return namespace["frame"], namespace  # type: ignore[return-value]


def test_module_code_of_a_native_package_counts_as_its_import() -> None:
    frame, _ = _module_frame("torch._fgar_probe")
    assert interrupts.importing_native_package(frame)
    own_frame, _ = _module_frame("fgar_cli._probe")
    assert not interrupts.importing_native_package(own_frame)


def test_a_native_package_function_called_after_its_import_does_not_count() -> None:
    _, namespace = _module_frame("torch._fgar_probe")
    later = namespace["later"]
    assert callable(later)
    assert not interrupts.importing_native_package(later())  # type: ignore[arg-type]


def test_a_signal_during_a_native_import_is_raised_after_it() -> None:
    # The "import" sends itself SIGINT, then keeps running bytecode for 0.3 s: without the
    # deferral, Interrupted is raised inside it (inside torch's C++ initialisation, an abort).
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from fgar_cli import interrupts

        interrupts.install()
        probe = '''
        import os, signal, time
        os.kill(os.getpid(), signal.SIGINT)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
        '''
        finished = False
        try:
            exec(compile(probe, "<torch._fgar_probe>", "exec"), {"__name__": "torch._fgar_probe"})
            finished = True
            time.sleep(10)
            print("not interrupted")
        except interrupts.Interrupted:
            print("interrupted after the import" if finished else "interrupted inside the import")
        print("received", interrupts.received())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["interrupted after the import", "received True"], result.stdout
