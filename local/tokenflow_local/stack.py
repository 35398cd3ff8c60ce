"""The whole Tokenflow stack on one machine: embedded AWS, the Particle simulator, the functions wired as
template.yaml wires them, the HTTP API and a fleet of simulated devices. No AWS account, no Docker.

What runs where (all on 127.0.0.1), and which module of ``tokenflow_local`` does it:

- a moto server (S3, DynamoDB, SQS, SSM) with the table, bucket, queues and SecureString parameters
  built from template.yaml's own definitions (``embedded_aws``, ``resources``), in this process or,
  with ``aws_process=True`` (``make run``), in a process of its own on the second core (``aws_process``);
- the Particle Cloud simulator with the product's fleet (``particle_sim``);
- the functions, unchanged, in background threads (``lambda_runtime``), triggered as on AWS
  (``triggers``):
  * ingest: by every new object under ``incoming/`` that matches the template's S3 filters (the
    bucket notification moto sends, handed to the local function by ``triggers.S3PushNotifications``),
    invoked asynchronously with the template's retries and failure queue;
  * sweep: by the schedule (a short interval here instead of ``SweepSchedule``) and by ingest's own
    ``lambda.invoke(InvocationType="Event")``, which reaches a small local Lambda Invoke endpoint
    (``AWS_ENDPOINT_URL_LAMBDA``); one sweep at a time, as its reserved concurrency of 1 makes it;
  * assign: fed by SQS pollers (the event source mapping: the template's batch size and maximum
    concurrency, long polling, receive counts, visibility and the redrive policy to the dead-letter queue);
  * api: behind the local HTTP gateway (API Gateway HTTP API v2 events, ``gateway``);
- simulated devices that read their Ledger and post the status event to the webhook route (``devices``),
  and publish their readings, which the Particle simulator forwards through
  firmware/integrations/blynk_https_get.json (its region the stack's ``blynk_region``) to
- a Blynk simulator (``blynk_sim``), whose tokens ``register_blynk_tokens`` adds (those of the exports
  the stack imports); the verify function reads it (``BLYNK_URL_TEMPLATE``), run on its own schedule
  tick like the sweep.

This module only composes them: what starts in which order, and what stops in the reverse one. The
process it all runs in (ports, environment, cached clients) is ``processes``'. Everything stops with
``stop()`` (or the context manager), and the process environment is restored. With ``state_dir``,
``stop()`` saves the state and the next ``start()`` restores it (``persistence``; ``fresh`` forgets it).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenflow_local import (
    embedded_aws,
    lambda_runtime,
    moto_speedups,
    persistence,
    resources,
    stack_record,
    triggers,
)
from tokenflow_local.aws_process import AwsProcess
from tokenflow_local.blynk_sim import BlynkSimulator
from tokenflow_local.embedded_aws import SECRET_ENV, MotoServer
from tokenflow_local.lambda_runtime import INVOKE_PATH, AsyncFunction, FunctionError, LambdaEndpoint
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.particle_sim_integrations import Integration
from tokenflow_local.processes import (
    PortInUse,
    ProcessEnvironment,
    check_ports,
    forget_clients,
    free_port,
    port_error,
    wait_for,
)
from tokenflow_local.resources import ACCOUNT_ID, REGION, StackResources

# What callers (run.py, the tests, the benchmarks) import from here, wherever it now lives.
__all__ = [
    "ACCOUNT_ID",
    "INVOKE_PATH",
    "REGION",
    "SECRET_ENV",
    "AsyncFunction",
    "FunctionError",
    "LambdaEndpoint",
    "LocalStack",
    "MotoServer",
    "PortInUse",
    "forget_clients",
    "free_port",
    "port_error",
    "running",
    "wait_for",
]

log = logging.getLogger(__name__)

BLYNK_INTEGRATION = Path(__file__).resolve().parents[2] / "firmware" / "integrations" / "blynk_https_get.json"

# Each server of the stack: what it is, and the option of `python -m tokenflow_local.run` that moves it.
SERVERS = {
    "aws": ("The embedded AWS (moto)", "--aws-port"),
    "api": ("The HTTP API gateway", "--api-port"),
    "particle": ("The Particle simulator", "--particle-port"),
    "lambda": ("The local Lambda endpoint", ""),
}


class LocalStack:
    """Start with ``start()`` (or ``with LocalStack(...) as stack``); every port 0 picks a free one."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        aws_port: int = 4566,
        api_port: int = 3000,
        particle_port: int = 4000,
        lambda_port: int = 0,
        devices: int = 25,
        quarantined: int = 1,
        denied: int = 0,
        devices_per_page: int = 10,
        stack_name: str = "tokenflow-local",
        sweep_interval: float = 5.0,
        poll_interval: float = 0.5,
        retry_delay: int = 2,
        simulate_devices: bool = True,
        device_interval: float = 0.5,
        device_first_retry: float = 2.0,
        device_max_retry: float = 30.0,
        particle_token: str | None = None,
        blynk_region: str = "ny3",
        verify_interval: float | None = None,
        data_interval: float = 5.0,
        state_dir: Path | None = None,
        fresh: bool = False,
        aws_process: bool = False,
        concurrent: bool = False,
    ) -> None:
        self.host = host
        self.ports = {"aws": aws_port, "api": api_port, "particle": particle_port, "lambda": lambda_port}
        self.fleet_size = devices
        self.quarantined = quarantined
        self.denied = denied
        self.devices_per_page = devices_per_page
        self.stack_name = stack_name
        self.sweep_interval = sweep_interval
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.simulate_devices = simulate_devices
        self.device_interval = device_interval
        self.device_first_retry = device_first_retry
        self.device_max_retry = device_max_retry
        self.particle_token = particle_token or f"sim-{secrets.token_hex(12)}"
        self.webhook_secret = secrets.token_urlsafe(24)  # new every run, as an operator would choose
        self.blynk_region = blynk_region  # the BlynkRegion parameter and the integration's region
        self.verify_interval = verify_interval if verify_interval is not None else sweep_interval
        self.data_interval = data_interval  # how often a simulated device publishes its readings
        self.blynk: BlynkSimulator | None = None
        self.errors: list[FunctionError] = []
        self.deployment = StackResources(stack_name)
        # The deployment's names, shared with self.deployment (the same dicts, filled as it creates).
        self.parameters = self.deployment.parameters
        self.bucket = self.deployment.bucket
        self.table = self.deployment.table
        self.queues = self.deployment.queues  # logical id -> url
        self.functions: dict[str, AsyncFunction] = {}
        # moto in this process (the tests), or in one of its own on the second core (make run).
        self.aws_process = aws_process
        # make run's pace: the gateway runs concurrent requests in environments of their own (as
        # Lambda scales) and each simulated device publishes on its own. Off (the tests' stacks):
        # one request at a time per function, and the fleet answers a tick's reports before the next.
        self.concurrent = concurrent
        self.moto: MotoServer | AwsProcess | None = None
        self.simulator: ParticleSimulator | None = None
        self.lambda_endpoint: LambdaEndpoint | None = None
        self.gateway: Any = None
        self.outputs: dict[str, str] = {}  # the recorded stack's outputs (``stack_record``)
        self.fleet: Any = None
        self._loops: list[triggers.Loop] = []
        self._environment = ProcessEnvironment()
        self._started = False
        self._serving = False  # started completely: only then is its state worth saving
        # Persistence (``persistence``): the state saved by the last clean stop, unless ``fresh``.
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.restored: persistence.Restored | None = None
        self._restoring = False
        if self.state_dir is not None:
            if fresh:
                persistence.clear(self.state_dir)
            saved = persistence.load_secrets(self.state_dir)
            if saved is not None:  # the SSM parameters, the simulator and the devices agree again
                self._restoring = True
                self.particle_token = saved["particle_token"]
                self.webhook_secret = saved["webhook_secret"]

    # ---- addresses ---------------------------------------------------------------------------

    @property
    def aws_url(self) -> str:
        return f"http://{self.host}:{self.ports['aws']}"

    @property
    def particle_url(self) -> str:
        return f"http://{self.host}:{self.ports['particle']}"

    @property
    def api_url(self) -> str | None:
        return f"http://{self.host}:{self.ports['api']}" if self.gateway else None

    @property
    def ingest_arn(self) -> str:
        """The ingest function's ARN, as the bucket's notification names it."""
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_names['ingest']}"

    @property
    def function_names(self) -> dict[str, str]:
        """functions/<name> -> the function's name as AWS would know it."""
        return self.deployment.function_names

    def client(self, service: str) -> Any:
        """A boto3 client of the embedded AWS (what a user or a test would use)."""
        return embedded_aws.client(service, self.aws_url)

    def environment(self) -> dict[str, str]:
        """The variables the functions read: the template's, resolved, plus the local endpoints."""
        return {
            **self.deployment.function_environment(),
            # The local schedule's tick stands for SweepSchedule: it paces the sweep's passes.
            "SWEEP_SCHEDULE": f"rate({self.sweep_interval:g} seconds)",
            # One process runs every function: one service name for the logs of all of them.
            "POWERTOOLS_SERVICE_NAME": "tokenflow-local",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
            # One process, one Particle client for every invocation: it paces to the whole share of
            # the limit, not to one of AssignMaxConcurrency's parts (settings.particle_request_budget).
            "PARTICLE_RATE_CLIENTS": "1",
            "AWS_ENDPOINT_URL": self.aws_url,
            "AWS_ENDPOINT_URL_LAMBDA": self.lambda_endpoint.url if self.lambda_endpoint else "",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
            # The verify function's Blynk: the simulator, every region on one port.
            "BLYNK_URL_TEMPLATE": self.blynk.url_template if self.blynk else "",
            **SECRET_ENV,
        }

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        self._started = True
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto_speedups.install()
        check_ports(self.host, self.ports, SERVERS)
        self.moto = (
            AwsProcess(self.host, self.ports["aws"])
            if self.aws_process
            else MotoServer(self.host, self.ports["aws"])
        )
        self.moto.start()
        self.ports["aws"] = self.moto.get_host_and_port()[1]
        self._start_blynk()
        self._start_simulator()
        self.deployment.create(
            self.client,
            {"ParticleTokenParameter": self.particle_token, "WebhookSecretParameter": self.webhook_secret},
        )
        if self._restoring:
            assert self.state_dir is not None
            self.restored = persistence.restore_aws(self, self.state_dir)
        self._build_functions()
        lambda_runtime.register_function_names(self.function_names)
        self.lambda_endpoint = LambdaEndpoint(
            self.host, self.ports["lambda"], {f.function_name: f for f in self.functions.values()}
        )
        self.ports["lambda"] = self.lambda_endpoint.port
        self.lambda_endpoint.start()
        self._environment.apply(self.environment())
        for function in self.functions.values():
            function.start()
        self._start_triggers()
        self._start_gateway()
        # What `tokenflow doctor` reads: the stack's outputs, alarm topic and bucket notification.
        # The notification is also what starts ingest: moto sends it, the push hook delivers it.
        if isinstance(self.moto, AwsProcess):  # S3 invokes the function through the Invoke API
            self.moto.forward_notifications(self.ingest_arn, self.lambda_endpoint.url)
        else:
            triggers.S3PushNotifications.register(self.ingest_arn, self.functions["ingest"].submit)
        self.outputs = stack_record.register(self)
        if self.restored is not None:  # an import the last run left unfinished: ingest it now
            filters = resources.s3_key_filters("IngestFunction")
            for key in self.restored.incoming:
                if any(key.startswith(prefix) and key.endswith(suffix) for prefix, suffix in filters):
                    self.functions["ingest"].submit(lambda_runtime.s3_put_event(self.bucket, key))
        if self.simulate_devices and self.api_url:
            self._start_devices()
        self._serving = True

    def stop(self) -> None:
        """Stop every thread and server (safe to call twice, or after a failed start)."""
        if not self._started:
            return
        self._started = False
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                self.fleet.stop()
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                self.gateway.stop()
        triggers.S3PushNotifications.unregister(self.ingest_arn)
        for loop in self._loops:
            loop.stop()
        if self.moto is not None:  # the pollers' 20 s receives end now, not at their timeout
            with contextlib.suppress(Exception):
                self.moto.interrupt_receives()
        for loop in self._loops:
            loop.join()
        self._loops.clear()
        for function in self.functions.values():
            function.stop()
        if self.lambda_endpoint is not None:
            self.lambda_endpoint.stop()
        if self._serving and self.state_dir is not None:
            # Nothing runs any more: the embedded AWS and the simulators hold the final state.
            try:
                persistence.save(self, self.state_dir)
            except Exception:
                log.exception("The local state could NOT be saved to %s", self.state_dir)
                raise
        self._serving = False
        if self.simulator is not None:
            with contextlib.suppress(Exception):
                self.simulator.stop()
        if self.blynk is not None:
            with contextlib.suppress(Exception):
                self.blynk.stop()
        if self.moto is not None:
            # In-process moto's state outlives the server: leave it empty for whatever runs next.
            with contextlib.suppress(Exception):
                self.moto.reset()
            self.moto.stop()
        self._environment.restore()

    # ---- the parts, in the order they start -------------------------------------------------------

    def _start_blynk(self) -> None:
        self.blynk = BlynkSimulator(self.host, 0).start()
        self.parameters.update(BlynkRegion=self.blynk_region)

    def register_blynk_tokens(self, tokens: Iterable[str], region: str | None = None) -> None:
        """The tokens exist in Blynk, in ``region`` (the stack's own by default), as the static tokens
        of the template an export came from do."""
        assert self.blynk is not None
        for token in tokens:
            self.blynk.add_token(token, region or self.blynk_region)

    def _start_simulator(self) -> None:
        try:
            self.simulator = ParticleSimulator(
                self.host,
                self.ports["particle"],
                access_token=self.particle_token,
                max_per_page=self.devices_per_page,
            )
        except OSError as exc:
            what, option = SERVERS["particle"]
            raise port_error(what, self.host, self.ports["particle"], exc, option) from exc
        self.ports["particle"] = self.simulator.port
        if self._restoring:
            assert self.state_dir is not None
            persistence.restore_simulators(self, self.state_dir)
        else:
            self.simulator.add_devices(self.fleet_size, quarantined=self.quarantined, denied=self.denied)
        self.simulator.start()
        self.parameters.update(ParticleProduct=self.simulator.product, ParticleApiUrl=self.simulator.url)
        if self.blynk is not None:
            self.simulator.integrations.add(
                Integration.from_file(BLYNK_INTEGRATION, f"{self.blynk.url}/{self.blynk_region}")
            )

    def _build_functions(self) -> None:
        """The asynchronously invoked functions, with the template's EventInvokeConfig."""
        names = self.function_names
        retries, failure_queue = self.deployment.async_invoke_config("IngestFunction")
        self.functions["ingest"] = AsyncFunction(
            "ingest",
            names["ingest"],
            retries=retries,
            retry_delay=self.retry_delay,
            on_failure=(
                lambda_runtime.sqs_failure_destination(self.client("sqs"), failure_queue, "ingest")
                if failure_queue
                else None
            ),
            errors=self.errors,
        )
        self.functions["sweep"] = AsyncFunction(
            "sweep",
            names["sweep"],
            retries=0,  # the schedule's RetryPolicy: the next tick does the same work
            retry_delay=self.retry_delay,
            on_failure=None,
            errors=self.errors,
            coalesce=True,
        )
        if "verify" in names:
            self.functions["verify"] = AsyncFunction(
                "verify",
                names["verify"],
                retries=0,  # the template's EventInvokeConfig and schedule RetryPolicy: 0
                retry_delay=self.retry_delay,
                on_failure=None,
                errors=self.errors,
                coalesce=True,
            )

    def _start_triggers(self) -> None:
        self._loops.append(
            triggers.schedule_loop(self.functions["sweep"].submit, self.sweep_interval, self.errors)
        )
        if "verify" in self.functions:  # the same SweepSchedule starts it on AWS
            self._loops.append(
                triggers.schedule_loop(
                    self.functions["verify"].submit, self.verify_interval, self.errors, name="verify-schedule"
                )
            )
        queue_url, batch, concurrency = self.deployment.sqs_event_source("AssignFunction")
        self._loops += triggers.sqs_pollers(
            self.client("sqs"),
            queue_url,
            "assign",
            batch_size=batch,
            concurrency=concurrency,
            retry_delay=self.retry_delay,
            interval=self.poll_interval,
            errors=self.errors,
        )
        for loop in self._loops:
            loop.start()

    def _start_gateway(self) -> None:
        try:
            from tokenflow_local import gateway as gateway_module
        except ImportError:
            log.warning("No local gateway (tokenflow_local.gateway): the HTTP API is not served")
            return
        if not (lambda_runtime.FUNCTIONS / "api" / "app.py").exists():
            log.warning("No api function: the HTTP API is not served")
            return
        # A fresh copy of the handler module: nothing cached from an earlier stack in this process.
        lambda_runtime.load_handler("api", fresh=True)
        gateway = gateway_module.Gateway(
            host=self.host, port=self.ports["api"], max_concurrency=None if self.concurrent else 1
        )
        try:
            gateway.start()
        except OSError as exc:
            what, option = SERVERS["api"]
            raise port_error(what, self.host, self.ports["api"], exc, option) from exc
        self.gateway = gateway
        self.ports["api"] = int(getattr(gateway, "port", None) or self.ports["api"])

    def _start_devices(self) -> None:
        from tokenflow_local.devices import DeviceFleet

        assert self.simulator is not None and self.api_url
        self.fleet = DeviceFleet(
            self.simulator.url,
            f"{self.api_url}/webhooks/particle",
            self.webhook_secret,
            ledger=str(self.parameters.get("LedgerName") or "blynk-tokens-c2d"),
            interval=self.device_interval,
            first_retry=self.device_first_retry,
            max_retry=self.device_max_retry,
            data_interval=self.data_interval,
            independent=self.concurrent,
        )
        self.fleet.start()

    # ---- waiting (tests and the run script) -----------------------------------------------------

    def idle(self) -> bool:
        """No queued function work: the ingest and sweep queues are empty and the assign queue drained."""
        if not all(f.idle for f in self.functions.values()):
            return False
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queues["AssignQueue"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            attrs["ApproximateNumberOfMessages"] == "0"
            and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
        )


@contextlib.contextmanager
def running(**options: Any) -> Iterator[LocalStack]:
    with LocalStack(**options) as stack:
        yield stack
