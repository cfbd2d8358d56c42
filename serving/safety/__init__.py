"""The SafetyPolicy filters of the serving path: crisis, toxicity, PII, advice and bias
detectors (one module each, behind ``base.Detector``), the shared normaliser and learned
classifier, and the policy engine that applies a policy's actions to chat and Open Inference
Protocol requests and responses. Free of HTTP and of kopf."""
