"""Draws the live result on a frame: label, probability bar, FPS and latency."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def draw_overlay(frame_bgr: np.ndarray, result: Result, fps: float) -> np.ndarray:
    """A copy of ``frame_bgr`` with a translucent status panel in the top-left corner."""
    import cv2

    img = frame_bgr.copy()
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 600.0)
    pad = int(8 * scale)
    panel_w, panel_h = int(min(w, 320 * scale)), int(78 * scale)
    roi = img[:panel_h, :panel_w]
    roi[:] = (roi * 0.35).astype(np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    text = f"{result.label} {result.probability * 100:.0f}%"
    cv2.putText(img, text, (pad, int(26 * scale)), font, 0.8 * scale, (255, 255, 255), max(1, int(2 * scale)),
                cv2.LINE_AA)
    bar_y, bar_h = int(36 * scale), int(12 * scale)
    bar_w = panel_w - 2 * pad
    cv2.rectangle(img, (pad, bar_y), (pad + bar_w, bar_y + bar_h), (90, 90, 90), -1)
    fill = int(bar_w * float(np.clip(result.probability, 0.0, 1.0)))
    cv2.rectangle(img, (pad, bar_y), (pad + fill, bar_y + bar_h), (80, 200, 80), -1)
    info = f"{fps:5.1f} FPS  {result.latency_ms:5.1f} ms"
    cv2.putText(img, info, (pad, int(68 * scale)), font, 0.55 * scale, (230, 230, 230), 1, cv2.LINE_AA)
    return img
