"""Model zoo: the paper's architectures (loading the public checkpoints exactly) and the digits models."""
from .digits import DigitsEpsMLP, digits_mlp
from .layers import InputCenterLayer, NormalizeLayer, normalization_layer
from .unet import UNetModel, diffusion_settings_from_flags, unet_from_flags, unet_kwargs_from_flags
from .zoo import ARCHITECTURES, PRECISIONS, apply_precision, classifier, prepare_for_inference
from .checkpoints import CheckpointError, load_classifier, load_diffusion, sha256_file
