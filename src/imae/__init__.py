"""imae: Information Maximization Auto-Encoding (Zhang, Zhao & Balzano, 2018) in PyTorch.

Learn hybrid discrete (y) + continuous (z) representations with autoencoders.

    from imae import IMAE, load_dataset
    data = load_dataset("digits")
    model = IMAE(beta=6.0, gamma=12.0).fit(data, epochs=150, seed=0)
    y_prob, z_mean, z_logvar = model.encode(data.images)
"""

from imae.data import load_dataset
from imae.model import IMAE, Model

__version__ = "0.1.0"
__all__ = ["IMAE", "Model", "load_dataset", "__version__"]
