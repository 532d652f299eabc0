"""`python run_step.py ARGS...` runs jobs.cli.main with the fake step registered as `mammo fake`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common.steps import Step  # noqa: E402
from jobs import cli  # noqa: E402

cli.STEPS["fake"] = Step("fake", "fake_step", "test step")
sys.exit(cli.main(sys.argv[1:]))
