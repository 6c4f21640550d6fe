"""Calibration of predictions on held-out data, and the scores of an uncertainty estimate.

Regression: split conformal prediction intervals (Vovk et al.; Lei et al. 2018). On a
calibration set with targets ``y``, predictions ``mu`` and (optionally) predicted standard
deviations ``sigma``, the nonconformity score is ``|y - mu| / sigma`` (normalized: intervals
adapt to the molecule) or ``|y - mu|`` (constant width). With ``n`` scores the margin ``q`` is
their ``ceil((n + 1) * level) / n`` empirical quantile, and ``mu +- q * sigma`` covers a new
exchangeable target with probability at least ``level``.

Classification: Platt scaling (a logistic regression on the logit of the probability, with
Platt's smoothed targets, so a separable calibration set gets a finite slope) or isotonic
regression (a monotone step function), fitted on the calibration set. Both keep the
ranking of the molecules, and so the ROC-AUC, exactly: an isotonic fit alone would tie every
probability inside a step, so ties are broken by blending in :data:`ISOTONIC_TIE_BREAK` of the raw
probability, which makes the map strictly increasing.

Everything here is plain numpy / scikit-learn on arrays and is stored as plain JSON data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from molml.errors import DataError

CLASSIFICATION_METHODS = ("platt", "isotonic")
ISOTONIC_TIE_BREAK = 1e-3  # share of the raw probability in an isotonic calibration
PROBABILITY_EPS = 1e-15  # logit(p) stays finite and distinct for every p in (0, 1) a float holds


def conformal_margin(scores: np.ndarray, level: float) -> float:
    """The split-conformal margin: the ``ceil((n + 1) level) / n`` empirical quantile of the
    calibration ``scores`` (``inf`` when ``n`` is too small for the level)."""
    if not 0 < level < 1:
        raise DataError(f"the interval level must be between 0 and 1, got {level}")
    scores = np.sort(np.asarray(scores, dtype=float)[np.isfinite(scores)])
    rank = math.ceil((len(scores) + 1) * level - 1e-9)  # 1e-9: no float round-up
    if len(scores) == 0 or rank > len(scores):
        return math.inf
    return float(scores[rank - 1])


@dataclass(frozen=True)
class ConformalInterval:
    """A fitted split-conformal interval for one regression task.

    ``normalized``: the interval is ``mu +- margin * sigma`` (sigma: the model's predicted
    standard deviation), otherwise ``mu +- margin``.
    """

    level: float
    margin: float
    normalized: bool
    n_calibration: int
    kind: str = "conformal"

    @classmethod
    def fit(
        cls, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray | None, level: float
    ) -> ConformalInterval:
        """Fit on labelled calibration molecules (NaN targets are skipped)."""
        y, mu = np.asarray(y, dtype=float), np.asarray(mu, dtype=float)
        labelled = np.isfinite(y) & np.isfinite(mu)
        if not labelled.any():
            raise DataError("no labelled calibration molecule to fit a conformal interval on")
        keep = labelled
        if sigma is not None:
            sigma = np.asarray(sigma, dtype=float)
            spread = np.isfinite(sigma) & (sigma > 0)
            if not (labelled & spread).any():
                raise DataError(
                    f"all {int(labelled.sum())} labelled calibration molecules have a predicted "
                    "standard deviation of 0 (e.g. ensemble members that agree exactly), so an "
                    "interval scaled by it has no width; use --constant-width"
                )
            keep = labelled & spread
        residual = np.abs(y[keep] - mu[keep])
        scores = residual / sigma[keep] if sigma is not None else residual
        margin = conformal_margin(scores, level)
        if not math.isfinite(margin):
            raise DataError(
                f"{int(keep.sum())} calibration molecules are too few for a {level:g} interval "
                f"(at least {math.ceil(level / (1 - level) - 1e-9)} are needed)"
            )
        return cls(level, margin, sigma is not None, int(keep.sum()))

    def bounds(self, mu: np.ndarray, sigma: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper interval bounds."""
        if self.normalized and sigma is None:
            raise DataError("a normalized conformal interval needs predicted standard deviations")
        half = self.margin * np.asarray(sigma, dtype=float) if self.normalized else self.margin
        return mu - half, mu + half

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProbabilityCalibration:
    """A fitted map from a binary classifier's probability to a calibrated probability.

    ``platt``: ``sigmoid(a * logit(p) + b)``; ``isotonic``: linear interpolation through the
    points ``(x, y)`` of an isotonic regression (constant outside them), blended with
    :data:`ISOTONIC_TIE_BREAK` of ``p`` so that no two different probabilities are tied.
    """

    method: str
    params: dict[str, Any]
    n_calibration: int
    kind: str = "probability"

    @classmethod
    def fit(cls, y: np.ndarray, p: np.ndarray, method: str = "isotonic") -> ProbabilityCalibration:
        """Fit on labelled calibration molecules (NaN labels are skipped)."""
        if method not in CLASSIFICATION_METHODS:
            raise DataError(
                f"unknown calibration method {method!r}; choose from {CLASSIFICATION_METHODS}"
            )
        y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
        keep = np.isfinite(y) & np.isfinite(p)
        y, p = y[keep], p[keep]
        if not np.isin(y, (0, 1)).all():
            raise DataError(
                "calibrating probabilities needs 0/1 labels; these include "
                f"{sorted(set(y[~np.isin(y, (0, 1))].tolist()))[:5]}"
            )
        if len(np.unique(y)) < 2:
            raise DataError("calibrating probabilities needs both classes in the calibration set")
        if method == "platt":
            # Platt's (1999) targets, (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0,
            # keep the slope finite when the calibration set is separable (each molecule
            # enters as both classes, weighted by its target)
            positives = y == 1
            n_pos, n_neg = int(positives.sum()), int((~positives).sum())
            target = np.where(positives, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
            z = _logit(p)[:, None]
            regression = LogisticRegression(C=1e6, max_iter=1000)
            regression.fit(
                np.vstack([z, z]),
                np.r_[np.ones(len(y)), np.zeros(len(y))],
                sample_weight=np.r_[target, 1 - target],
            )
            params = {"a": float(regression.coef_[0, 0]), "b": float(regression.intercept_[0])}
            if not params["a"] > 0:
                raise DataError(
                    f"Platt scaling fitted a slope of {params['a']:.3g} on the {len(y)} "
                    "calibration molecules: the model ranks them no better than chance, so the "
                    "map would flatten or reverse its ranking; use --method isotonic, or "
                    "calibrate a better model"
                )
        else:
            isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
            params = {
                "x": isotonic.X_thresholds_.tolist(),
                "y": isotonic.y_thresholds_.tolist(),
            }
        return cls(method, params, int(len(y)))

    def transform(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (NaN stays NaN)."""
        p = np.asarray(p, dtype=float)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.params["a"] * _logit(p) + self.params["b"])))
        fitted = np.interp(p, self.params["x"], self.params["y"])
        return (1 - ISOTONIC_TIE_BREAK) * fitted + ISOTONIC_TIE_BREAK * p

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_from_dict(data: dict[str, Any]) -> ConformalInterval | ProbabilityCalibration:
    """A calibration stored with ``to_dict``."""
    fields = {k: v for k, v in data.items() if k != "kind"}
    if data.get("kind") == "conformal":
        interval = ConformalInterval(**fields)
        number = (int, float)
        margin, level = interval.margin, interval.level
        if not (isinstance(margin, number) and math.isfinite(margin) and margin >= 0):
            raise DataError(f"margin must be a finite number >= 0, got {margin!r}")
        if not (isinstance(level, number) and 0 < level < 1):
            raise DataError(f"level must be a number in (0, 1), got {level!r}")
        if not isinstance(interval.normalized, bool):
            raise DataError(f"normalized must be true or false, got {interval.normalized!r}")
        return interval
    if data.get("kind") == "probability":
        calibration = ProbabilityCalibration(**fields)
        _check_probability_map(calibration.method, calibration.params)
        return calibration
    raise DataError(f"unknown calibration kind {data.get('kind')!r}")


def _check_probability_map(method: Any, params: Any) -> None:
    """Refuse a stored probability map that :meth:`ProbabilityCalibration.fit` cannot make:
    an unknown method, a Platt slope that is not positive (it reverses the ranking), isotonic
    points that are not increasing probabilities."""
    if method not in CLASSIFICATION_METHODS:
        raise DataError(f"unknown calibration method {method!r}; one of {CLASSIFICATION_METHODS}")
    if not isinstance(params, dict):
        raise DataError(f"params must be a mapping, got {params!r}")
    if method == "platt":
        a, b = params.get("a"), params.get("b")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)):
            raise DataError(f"Platt parameters a and b must be finite numbers, got {a!r}, {b!r}")
        if not a > 0:
            raise DataError(f"a Platt slope must be > 0 (it would reverse the ranking), got {a}")
        return
    try:
        x = np.asarray(params.get("x"), dtype=float)
        y = np.asarray(params.get("y"), dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"isotonic points x and y must be lists of numbers ({exc})") from exc
    ordered = x.ndim == y.ndim == 1 and len(x) == len(y) > 0 and np.all(np.diff(x) >= 0)
    if not (ordered and np.all(np.diff(y) >= 0)):
        raise DataError("isotonic points must be equally many, with x and y not decreasing")
    if not (np.all((x >= 0) & (x <= 1)) and np.all((y >= 0) & (y <= 1))):
        raise DataError("isotonic points must be probabilities (between 0 and 1)")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return np.log(p) - np.log1p(-p)


# ---------------------------------------------------------------------- scores
def interval_coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of targets inside ``[lower, upper]``."""
    y = np.asarray(y, dtype=float)
    return float(np.mean((y >= lower) & (y <= upper)))


def gaussian_interval(mu: np.ndarray, sigma: np.ndarray, level: float) -> tuple[np.ndarray, ...]:
    """The central ``level`` interval of ``N(mu, sigma^2)``, uncalibrated."""
    half = stats.norm.ppf(0.5 + level / 2) * np.asarray(sigma, dtype=float)
    return mu - half, mu + half


def error_rank_correlation(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Spearman correlation of the absolute error with the predicted uncertainty (higher:
    the uncertainty ranks molecules by how wrong they are)."""
    value = stats.spearmanr(np.abs(np.asarray(y) - np.asarray(mu)), sigma).statistic
    return float(value)


def gaussian_nll(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Mean negative log-likelihood of the targets under ``N(mu, sigma^2)``."""
    return float(-np.mean(stats.norm.logpdf(y, loc=mu, scale=np.maximum(sigma, 1e-12))))


def miscalibration_area(
    y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, n_levels: int = 99
) -> float:
    """Area between the observed and the expected fraction of targets inside the central
    Gaussian intervals, over ``n_levels`` levels in (0, 1) (0 = perfectly calibrated
    Gaussian spread; at most 0.5)."""
    levels = np.linspace(0, 1, n_levels + 2)[1:-1]
    z = np.abs(np.asarray(y) - np.asarray(mu)) / np.maximum(sigma, 1e-12)
    observed = np.array([np.mean(z <= stats.norm.ppf(0.5 + q / 2)) for q in levels])
    return float(np.mean(np.abs(observed - levels)))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the mean |observed positive rate - mean probability| over ``n_bins`` equal-width
    probability bins, weighted by the bins' sizes."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.sum() * abs(y[inside].mean() - p[inside].mean())
    return float(total / len(y))


def regression_uncertainty_scores(
    y: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray | None = None,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> dict[str, float]:
    """The scores of a regression uncertainty estimate on labelled molecules (those with any
    value missing are left out; ``n`` counts the rest): interval coverage and mean width (given
    bounds), and Spearman(|error|, sigma), Gaussian NLL and miscalibration area (given
    sigma)."""
    finite = np.isfinite(y) & np.isfinite(mu)
    for column in (sigma, lower, upper):
        if column is not None:
            finite &= np.isfinite(column)
    y, mu = np.asarray(y)[finite], np.asarray(mu)[finite]
    sigma, lower, upper = (c[finite] if c is not None else None for c in (sigma, lower, upper))
    out: dict[str, float] = {"n": int(len(y))}
    if lower is not None and upper is not None:
        out["coverage"] = interval_coverage(y, lower, upper)
        out["mean_width"] = float(np.mean(upper - lower))
    if sigma is not None:
        out["spearman_abs_error"] = error_rank_correlation(y, mu, sigma)
        out["nll"] = gaussian_nll(y, mu, sigma)
        out["miscalibration_area"] = miscalibration_area(y, mu, sigma)
    return out
