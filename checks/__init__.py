"""Quality gates: Pandera models generated from declarations, and the asset checks built on them."""
