"""cutover.analysis: anytime-valid promotion tests, the metric provider, and the engine.

The statistics are a pure API anyone can drive with their own numbers, one update per interval::

    from cutover.analysis import RateRatioTest

    test = RateRatioTest(alpha_fail=0.01, alpha_pass=0.01, failure_margin=0.0, pass_margin=0.2)
    test.update(candidate_events=31, candidate_trials=1500, baseline_events=14, baseline_trials=1500)
    test.failed(), test.passed(), test.estimate(), test.bounds()

Every test may be checked after every interval, forever, without inflating its error rate
(Ville's inequality on an e-process), and stays valid when the traffic split changes between
intervals. See docs/analysis.md for the methods and their guarantees.
"""

from .counts import RateRatioTest, RatioBounds
from .cusum import BinomialCusum
from .engine import Analysis, Arms, PostPromotionWatch, Result, WatchResult
from .histograms import BucketShiftTest, QuantileBand, dkw_epsilon, exceedances, psi
from .judges import ConfidenceJudge, CountJudge, Counts, Evidence, Histogram, JudgeSettings, LatencyJudge, decide
from .provider import MetricProvider, MetricsUnavailable, PrometheusProvider, increment

__all__ = [
    "Analysis",
    "Arms",
    "BinomialCusum",
    "BucketShiftTest",
    "ConfidenceJudge",
    "CountJudge",
    "Counts",
    "Evidence",
    "Histogram",
    "JudgeSettings",
    "LatencyJudge",
    "MetricProvider",
    "MetricsUnavailable",
    "PostPromotionWatch",
    "PrometheusProvider",
    "QuantileBand",
    "RateRatioTest",
    "RatioBounds",
    "Result",
    "WatchResult",
    "decide",
    "dkw_epsilon",
    "exceedances",
    "increment",
    "psi",
]
