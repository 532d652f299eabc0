"""Same machine, same inputs, same numbers: TensorFlow's run-to-run sources of variation, switched off.

Three things can make two runs of one training step differ on one machine: kernels that accumulate in
a data-dependent order (op determinism fixes the order), a thread count that follows the machine's load
or core count (a reduction split over another number of threads rounds differently), and random draws
not derived from the profile's seed (common.training seeds Python, numpy and Keras from it; tf.data
shuffles and augmentation draws are seeded there too). Across CPU types the oneDNN kernels themselves
differ (vector width, blocking), which no setting here removes: see the README.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from common.profile import Profile


def configure_determinism(profile: Profile) -> dict[str, Any]:
    """Call before the first TensorFlow op runs; returns what was set, for the step's record."""
    threads = profile.runtime.threads
    tf.config.experimental.enable_op_determinism()
    try:
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        if tf.config.threading.get_inter_op_parallelism_threads() != threads:
            tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process (a caller in-process): its threads stay, recorded
        pass
    return {"op_determinism": True, "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
