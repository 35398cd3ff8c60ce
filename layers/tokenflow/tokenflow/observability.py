"""The one Logger, Metrics and Tracer of every function (service name from POWERTOOLS_SERVICE_NAME)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics(namespace="Tokenflow")
tracer = Tracer()
