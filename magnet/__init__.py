"""magnet: Magnifying Networks for gigapixel whole-slide images.

Paper: Dimitriou, Arandjelović, Harrison, "Magnifying Networks for Images with Billions of Pixels"
(``docs/method.md`` gives the implementable reading used here, every choice that is not the paper's marked).
"""

__version__ = "0.1.0"
