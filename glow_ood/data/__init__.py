"""glow_ood.data: every data set behind one API, uint8 [N, H, W, C] out.

    spec = DataSpec('fashion_mnist')            # offline IDX copy if installed, else TFDS
    x_test = load_array(spec, 'test')           # whole split, never augmented
    batches = train_iterator(spec, 'train', batch_size=64, seed=0, start_step=step)

See spec.py for the fields, sources.py for where data come from, pipeline.py
for the exact, resumable training order and the per-process sharding.
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'PIL', 'absl')  # before the imports it checks

from glow_ood.data.errors import DataUnavailableError
from glow_ood.data.errors import OFFLINE_OPTIONS
from glow_ood.data.pipeline import eval_batches
from glow_ood.data.pipeline import load_array
from glow_ood.data.pipeline import load_subset
from glow_ood.data.pipeline import subset_indices
from glow_ood.data.pipeline import train_iterator
from glow_ood.data.sources import resolve_source
from glow_ood.data.sources import STANDARD_OFFLINE_PATHS
from glow_ood.data.spec import AUGMENTS
from glow_ood.data.spec import CHANNELS
from glow_ood.data.spec import DataSpec
from glow_ood.data.spec import DATASET_NAMES
from glow_ood.data.spec import IMAGE_SIZES
from glow_ood.data.spec import SOURCES
from glow_ood.data.spec import validate_spec

__all__ = [
    'AUGMENTS', 'CHANNELS', 'DATASET_NAMES', 'DataSpec', 'DataUnavailableError',
    'IMAGE_SIZES', 'OFFLINE_OPTIONS', 'SOURCES', 'STANDARD_OFFLINE_PATHS',
    'eval_batches', 'load_array', 'load_subset', 'resolve_source', 'subset_indices',
    'train_iterator',
    'validate_spec',
]
