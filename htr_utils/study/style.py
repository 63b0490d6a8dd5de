"""The figures' one style (seaborn whitegrid, colour-blind palette), apart from the plots so that
:func:`htr_utils.study.outputs.setup` can set it without importing the analyses behind them."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

PALETTE = "colorblind"


def set_style(context: str = "notebook", font_scale: float = 1.0) -> None:
    """Seaborn whitegrid style with the colour-blind palette and figure defaults for PNG/PDF export."""
    sns.set_theme(context=context, style="whitegrid", palette=PALETTE, font_scale=font_scale)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
                         "axes.titlesize": "medium", "legend.fontsize": "small", "pdf.fonttype": 42})
