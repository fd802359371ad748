"""The config lives in the installed package: glow_ood/configs/tiny.py."""
from glow_ood.configs.tiny import get_config  # pylint: disable=unused-import
