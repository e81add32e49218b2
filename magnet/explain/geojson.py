"""The ROIs of every magnifying layer as a GeoJSON FeatureCollection that QuPath imports.

Convention:
    - Coordinates are level-0 pixels ``(x, y)``, x to the right, y down: QuPath's image coordinates, so
      dragging ``rois.geojson`` onto the slide in QuPath (or File > Import objects) places the boxes.
    - One Feature per ROI, a closed Polygon ``x0,y0 -> x1,y0 -> x1,y1 -> x0,y1 -> x0,y0``. The boxes are
      the real ones (``MagNetOutput.boxes_level0``), not clipped to the slide: an ROI may reach into the
      black padding of the square canvas (``magnet.geometry``) or, with a zoom ``s > 1``, beyond it,
      and the reader reads black there too. Clipping would misstate what the model saw.
    - ``properties``: QuPath's ``objectType: "annotation"`` and ``classification`` (``name: "layer l"``,
      ``color: [r, g, b]``, one colour per layer, ``magnet.explain.palette``), a ``name`` such as
      ``"L2 #3"`` (1-based, as in the figures and report), and our own ``layer`` (1-based), ``index``
      (0-based, depth-first order within the layer,
      the order of ``boxes_level0``), ``parent`` (index of the parent ROI in layer l-1; -1 for layer 1) and,
      on the last layer, ``running_probability`` (the slide probability after that patch, paper Figure 5).

The GeoJSON spec (RFC 7946) expects longitude/latitude; QuPath and other image tools use it for pixel
coordinates by convention, as here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from magnet import strict_json
from magnet.atomic import atomic_write_text
from magnet.explain.palette import layer_colour

__all__ = ["roi_features", "write_geojson"]

Box = Sequence[float]


def roi_features(
    boxes_per_layer: Sequence[Sequence[Box]],
    running_probabilities: Sequence[float] = (),
) -> dict[str, Any]:
    """A FeatureCollection of every ROI of every layer (see the module docstring for the properties)."""
    features: list[dict[str, Any]] = []
    previous = 1  # the root: one ROI
    for layer, boxes in enumerate(boxes_per_layer, start=1):
        children = max(1, len(boxes) // max(1, previous))  # P_l: children per parent, depth-first
        last = layer == len(boxes_per_layer)
        for index, box in enumerate(boxes):
            x0, y0, x1, y1 = (float(v) for v in box)
            properties: dict[str, Any] = {
                "objectType": "annotation",
                "name": f"L{layer} #{index + 1}",
                "classification": {"name": f"layer {layer}", "color": list(layer_colour(layer))},
                "layer": layer,
                "index": index,
                "parent": index // children if layer > 1 else -1,
            }
            if last and index < len(running_probabilities):
                properties["running_probability"] = float(running_probabilities[index])
            features.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                    },
                    "properties": properties,
                }
            )
        previous = max(1, len(boxes))
    return {"type": "FeatureCollection", "features": features}


def write_geojson(
    path: str | os.PathLike[str],
    boxes_per_layer: Sequence[Sequence[Box]],
    running_probabilities: Sequence[float] = (),
) -> None:
    """Write ``roi_features(...)`` to ``path`` (atomic)."""
    atomic_write_text(path, strict_json.dumps(roi_features(boxes_per_layer, running_probabilities)) + "\n")
