"""magnet: Magnifying Networks for gigapixel whole-slide images.

Paper: Dimitriou, Arandjelović, Harrison, "Magnifying Networks for Images with Billions of Pixels"
(see ``docs`` and the team's METHOD.md for the implementable reading used here).
"""

__version__ = "0.1.0"
