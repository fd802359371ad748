"""The config lives in the installed package: glow_ood/configs/pairs/celeb_a_to_svhn.py."""
from glow_ood.configs.pairs.celeb_a_to_svhn import get_config  # pylint: disable=unused-import
