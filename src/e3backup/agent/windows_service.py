"""The agent as a Windows service (seed: the Windows agent runs as a service under SYSTEM).

pywin32 is imported only here and only on Windows; nothing else in the package needs it.
Install and start, from an elevated prompt, after `e3backup agent enroll` (the config lives in
%PROGRAMDATA%\\E3Backup\\agent.toml):

    python -m e3backup.agent.windows_service install
    python -m e3backup.agent.windows_service start

Stopping the service cancels a running engine and reports the run, as SIGTERM does on Linux.
Not run by the tests (they run on Linux).
"""

from __future__ import annotations

import sys
import threading
from typing import Any


def _service_class() -> Any:
    import servicemanager
    import win32serviceutil

    from e3backup.agent.config import load_config
    from e3backup.agent.runner import Runner

    class AgentService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = "e3backup-agent"
        _svc_display_name_ = "e3backup agent"
        _svc_description_ = "Runs this host's backups and restores for the e3backup server."

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.runner: Runner | None = None
            self.thread: threading.Thread | None = None

        def SvcStop(self) -> None:
            if self.runner is not None:
                self.runner.stop("stopping: service stop requested")
            if self.thread is not None:
                self.thread.join(timeout=110)

        def SvcDoRun(self) -> None:
            servicemanager.LogInfoMsg("e3backup agent starting")
            self.runner = Runner(load_config())
            self.thread = threading.Thread(target=self.runner.run_forever)
            self.thread.start()
            self.thread.join()

    return AgentService


def main() -> None:
    if sys.platform != "win32":
        raise SystemExit("the Windows service entry point runs on Windows only")
    import win32serviceutil

    win32serviceutil.HandleCommandLine(_service_class())


if __name__ == "__main__":
    main()
