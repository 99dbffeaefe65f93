"""Draws the live result on a frame: label, probability bar, FPS and latency.

Text is sized from the frame's height (the label's letters about 1/16 of it, never under 12 px), so
it reads the same on a 320x240 USB camera as on a 1080p stream; the panel shrinks the text rather
than overflow a narrow frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL_HEIGHT = 1 / 16  # label cap height as a fraction of the frame height
MIN_LABEL_PX = 12


@dataclass
class Result:
    """What the model said about one frame, plus timing."""

    source: int
    index: int
    label: str
    probability: float  # probability of ``label``
    probs: list[float]
    latency_ms: float  # capture -> result
    inference_ms: float
    t_wall: float  # time.time() of the result
    path: str | None = None


def _fit(cv2, text: str, height: int, max_width: int, thickness: int) -> tuple[float, int, int]:
    """(font scale, width, height) of ``text`` at ``height`` px, shrunk to ``max_width`` if wider."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = cv2.getFontScaleFromHeight(font, max(1, height), thickness)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    if tw > max_width > 0:
        scale *= max_width / tw
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    return scale, tw, th


def draw_overlay(frame_bgr: np.ndarray, result: Result, fps: float) -> np.ndarray:
    """A copy of ``frame_bgr`` with a translucent status panel in the top-left corner."""
    import cv2

    img = frame_bgr.copy()
    h, w = img.shape[:2]
    label_px = max(MIN_LABEL_PX, round(h * LABEL_HEIGHT))
    pad = max(3, label_px // 3)
    thick = max(1, label_px // 12)
    text = f"{result.label} {result.probability * 100:.0f}%"
    info = f"{fps:5.1f} FPS  {result.latency_ms:5.1f} ms"
    s1, w1, h1 = _fit(cv2, text, label_px, w - 2 * pad, thick)
    s2, w2, h2 = _fit(cv2, info, round(label_px * 0.7), w - 2 * pad, max(1, thick // 2))
    bar_h = max(4, label_px // 2)
    panel_w = min(w, max(w1, w2) + 2 * pad)
    panel_h = min(h, h1 + bar_h + h2 + 4 * pad)
    roi = img[:panel_h, :panel_w]
    roi[:] = (roi * 0.35).astype(np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    y = pad + h1
    cv2.putText(img, text, (pad, y), font, s1, (255, 255, 255), thick, cv2.LINE_AA)
    bar_y, bar_w = y + pad, panel_w - 2 * pad
    cv2.rectangle(img, (pad, bar_y), (pad + bar_w, bar_y + bar_h), (90, 90, 90), -1)
    fill = int(bar_w * float(np.clip(result.probability, 0.0, 1.0)))
    cv2.rectangle(img, (pad, bar_y), (pad + fill, bar_y + bar_h), (80, 200, 80), -1)
    cv2.putText(img, info, (pad, bar_y + bar_h + pad + h2), font, s2, (230, 230, 230), max(1, thick // 2),
                cv2.LINE_AA)
    return img
