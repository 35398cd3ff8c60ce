"""``tokenflow doctor``: is a deployed stack ready to hand out tokens? One line per check, with the fix.

What an operator runs after ``sam deploy`` (or against the local stack with ``--local``). Each check
reads what the deployment reports, never what it was meant to be: CloudFormation's parameters and
outputs, the SSM parameters' types, Particle's own description of the token, the product and the
Ledger definition, the bucket's notification, the alarm topic's subscriptions, and the status
integration's header (compared by SHA-256). No secret is ever printed: the token and the webhook
secret are read to be used or hashed, and every message is built from names and counts only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import boto3
import requests
from botocore.exceptions import BotoCoreError, ClientError

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"
COLOURS = {OK: "\033[32m", FAIL: "\033[31m", WARN: "\033[33m", SKIP: "\033[2m"}
RESET = "\033[0m"

# What the rest of the checks read from the stack.
REQUIRED_OUTPUTS = ("ApiUrl", "WebhookUrl", "ExportsBucketName", "AlarmTopicArn")
INGEST_LOGICAL_ID = "IngestFunction"
# The template's defaults, for a stack that does not list a parameter (older templates).
PARAMETER_DEFAULTS = {
    "LedgerName": "blynk-tokens-c2d",
    "LedgerScope": "sandbox",
    "ParticleOrg": "",
    "ParticleApiUrl": "https://api.particle.io",
    "ParticleTokenParameter": "/tokenflow/particle-token",
    "WebhookSecretParameter": "/tokenflow/webhook-secret",
    "BlynkRegion": "ny3",
}
# The scopes the functions' Particle calls need, with the call each one covers, and no more: the
# functions never read or delete a Ledger instance (a revoke or a move writes the cleared state).
# Particle documents ``ledger.instances:set`` (its "Integration monitor" cloud app template lists
# ``ledger.instances:get`` and ``ledger.instances:set`` for an API user that reads and writes Ledger
# instances); the device names follow the same ``<resource>:<verb>`` pattern but no public source
# shows them: the line says so.
REQUIRED_SCOPES: dict[str, tuple[str, bool]] = {
    "devices:list": ("list the product's devices (sweep)", False),
    "devices:get": ("look up a product device (transfer)", False),
    "ledger.instances:set": ("write the token or the cleared state into the Ledger (assign)", True),
}
MIN_DAYS_LEFT = 14
INTEGRATION = Path(__file__).resolve().parents[2] / "firmware" / "integrations" / "tokenflow-status.json"
BLYNK_INTEGRATION = INTEGRATION.with_name("blynk_https_get.json")
BLYNK_REGION_PLACEHOLDER = "{{BLYNK_REGION}}"
SECRET_HEADER = "X-Tokenflow-Secret"  # noqa: S105 (a header name)
TIMEOUT = 10.0


@dataclass
class Check:
    """One line of the report: ``status`` is ok, FAIL, warn or skip; ``fix`` says what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self, colour: bool = False) -> str:
        mark = f"{COLOURS[self.status]}{self.status:<4}{RESET}" if colour else f"{self.status:<4}"
        text = f"{mark}  {self.name:<20}  {self.detail}"
        return text + (f"\n      fix: {self.fix}" if self.fix else "")


class Doctor:
    """Runs the checks in order; later ones use what earlier ones found (the stack, the token)."""

    def __init__(
        self,
        session: boto3.session.Session,
        endpoint: str | None,
        stack: str,
        *,
        integration: Path | None = INTEGRATION,
        blynk_integration: Path | None = BLYNK_INTEGRATION,
        api: Callable[[str], Any] | None = None,
        http: requests.Session | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.stack = stack
        self.integration = integration
        self.blynk_integration = blynk_integration
        self.api = api
        self.http = http or requests.Session()
        self.now = now
        self.outputs: dict[str, str] = {}
        self.parameters: dict[str, str] = {}
        self.ingest_function: str | None = None
        self.parameter_types: dict[str, str | None] = {}
        self.token: str | None = None
        self.token_info: dict[str, Any] | None = None

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)

    def checks(self) -> Iterator[Check]:
        yield self.check_stack()
        yield self.check_ssm()
        yield self.check_token()
        yield self.check_scopes()
        yield self.check_expiry()
        yield self.check_product()
        yield self.check_ledger()
        yield self.check_notification()
        yield self.check_subscription()
        yield self.check_webhook_secret()
        yield self.check_blynk()

    # ---- AWS ----------------------------------------------------------------------------------

    def check_stack(self) -> Check:
        name = "stack outputs"
        cloudformation = self.client("cloudformation")
        try:
            stack = cloudformation.describe_stacks(StackName=self.stack)["Stacks"][0]
        except (ClientError, IndexError) as exc:
            return Check(
                name,
                FAIL,
                f"stack {self.stack} not found ({_aws_reason(exc)})",
                "deploy it (make deploy), or pass --stack NAME / --region REGION of the deployed stack",
            )
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        self.parameters = {
            **PARAMETER_DEFAULTS,
            **{p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])},
        }
        try:
            resource = cloudformation.describe_stack_resource(
                StackName=self.stack, LogicalResourceId=INGEST_LOGICAL_ID
            )["StackResourceDetail"]
            self.ingest_function = resource.get("PhysicalResourceId")
        except ClientError:
            self.ingest_function = None
        missing = [key for key in REQUIRED_OUTPUTS if not self.outputs.get(key)]
        status = stack.get("StackStatus", "")
        if missing:
            return Check(
                name,
                FAIL,
                f"stack {self.stack} ({status}) lacks output(s) {', '.join(missing)}",
                "deploy the current template.yaml (make deploy); a failed or rolled-back update leaves the "
                "old outputs",
            )
        return Check(name, OK, f"stack {self.stack} ({status}): {', '.join(REQUIRED_OUTPUTS)}")

    def check_ssm(self) -> Check:
        name = "ssm parameters"
        if not self.parameters:
            return _skipped(name, "the stack")
        ssm = self.client("ssm")
        problems, fixes = [], []
        for key in ("ParticleTokenParameter", "WebhookSecretParameter"):
            parameter = self.parameters[key]
            try:
                found = ssm.describe_parameters(
                    ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [parameter]}]
                )["Parameters"]
            except ClientError as exc:
                problems.append(f"{parameter}: {_aws_reason(exc)}")
                continue
            kind = found[0].get("Type") if found else None
            self.parameter_types[key] = kind
            put = f"aws ssm put-parameter --name {parameter} --type SecureString --value '...'"
            if kind is None:
                problems.append(f"{parameter} does not exist")
                fixes.append(put)
            elif kind != "SecureString":
                problems.append(f"{parameter} is a {kind}, not a SecureString")
                # put-parameter --overwrite cannot change a parameter's type: delete it first.
                fixes.append(f"aws ssm delete-parameter --name {parameter}, then {put}")
        if problems:
            return Check(name, FAIL, "; ".join(problems), "; ".join(fixes) + " (README, one-time steps)")
        names = ", ".join(self.parameters[k] for k in ("ParticleTokenParameter", "WebhookSecretParameter"))
        return Check(name, OK, f"{names}: SecureString")

    def _secret(self, key: str) -> str | None:
        if not self.parameter_types.get(key):
            return None
        try:
            return str(
                self.client("ssm").get_parameter(Name=self.parameters[key], WithDecryption=True)["Parameter"][
                    "Value"
                ]
            )
        except ClientError:
            return None

    def check_notification(self) -> Check:
        name = "bucket notification"
        bucket = self.outputs.get("ExportsBucketName")
        if not bucket:
            return _skipped(name, "the ExportsBucketName output")
        redeploy = "redeploy (make deploy): the notification is part of the template; do not edit it by hand"
        try:
            config = self.client("s3").get_bucket_notification_configuration(Bucket=bucket)
        except ClientError as exc:
            return Check(
                name, FAIL, f"cannot read the notification of {bucket}: {_aws_reason(exc)}", redeploy
            )
        targets = config.get("LambdaFunctionConfigurations", [])
        if not self.ingest_function:
            return Check(name, FAIL, f"stack has no {INGEST_LOGICAL_ID} resource", redeploy)
        ours = [t for t in targets if _function_name(t.get("LambdaFunctionArn", "")) == self.ingest_function]
        creates = [t for t in ours if any(e.startswith("s3:ObjectCreated:") for e in t.get("Events", []))]
        incoming = [t for t in creates if _prefix(t) in ("", "incoming/")]
        if not incoming:
            others = sorted({_function_name(t.get("LambdaFunctionArn", "")) for t in targets}) or ["nothing"]
            return Check(
                name,
                FAIL,
                f"new objects under incoming/ in {bucket} do not reach {self.ingest_function} "
                f"(the bucket notifies {', '.join(others)})",
                redeploy,
            )
        return Check(name, OK, f"{bucket} incoming/ -> {self.ingest_function} ({len(incoming)} filter(s))")

    def check_subscription(self) -> Check:
        name = "alarm subscription"
        topic = self.outputs.get("AlarmTopicArn")
        if not topic:
            return _skipped(name, "the AlarmTopicArn output")
        subscribe = (
            f"set AlarmEmail and redeploy, then follow the link in AWS's e-mail; or aws sns subscribe "
            f"--topic-arn {topic} --protocol email --notification-endpoint you@example.com"
        )
        try:
            found = self.client("sns").list_subscriptions_by_topic(TopicArn=topic).get("Subscriptions", [])
        except ClientError as exc:
            return Check(
                name, FAIL, f"cannot list the subscriptions of the alarm topic: {_aws_reason(exc)}", subscribe
            )
        # An unconfirmed subscription is listed with the ARN "PendingConfirmation" (SNS API reference,
        # ListSubscriptionsByTopic); it receives nothing.
        confirmed = [s for s in found if s.get("SubscriptionArn", "").startswith("arn:")]
        pending = [s for s in found if s.get("SubscriptionArn") == "PendingConfirmation"]
        if confirmed:
            kinds = ", ".join(sorted({s.get("Protocol", "?") for s in confirmed}))
            return Check(name, OK, f"{len(confirmed)} confirmed ({kinds}) on the alarm topic")
        if pending:
            return Check(
                name,
                FAIL,
                f"{len(pending)} subscription(s) wait for confirmation: no alarm reaches anyone",
                "follow the confirmation link in the e-mail AWS sent (search for 'AWS Notification - "
                "Subscription Confirmation'); or " + subscribe,
            )
        return Check(name, FAIL, "the alarm topic has no subscription: no alarm reaches anyone", subscribe)

    # ---- Particle -----------------------------------------------------------------------------

    def _particle(self, path: str, **params: Any) -> requests.Response:
        assert self.token is not None
        url = self.parameters["ParticleApiUrl"].rstrip("/") + path
        return self.http.get(
            url, params=params, headers={"Authorization": f"Bearer {self.token}"}, timeout=TIMEOUT
        )

    def check_token(self) -> Check:
        name = "particle token"
        if not self.parameters:
            return _skipped(name, "the stack")
        parameter = self.parameters["ParticleTokenParameter"]
        self.token = self._secret("ParticleTokenParameter")
        if not self.token:
            return _skipped(name, f"the SSM parameter {parameter}")
        renew = (
            f"create an API user token (README, one-time step 1) and store it: aws ssm put-parameter "
            f"--name {parameter} --type SecureString --overwrite --value '...'"
        )
        try:
            response = self._particle("/v1/access_tokens/current")
        except requests.RequestException as exc:
            self.token = None
            return Check(
                name,
                FAIL,
                f"cannot reach Particle at {self.parameters['ParticleApiUrl']} ({type(exc).__name__})",
                "check the ParticleApiUrl parameter",
            )
        if response.status_code == 401:
            self.token = None
            return Check(name, FAIL, "Particle rejects the token in " + parameter + " (401)", renew)
        if response.status_code != 200:
            self.token = None
            return Check(name, FAIL, f"GET /v1/access_tokens/current answered {response.status_code}", renew)
        try:
            self.token_info = response.json()
        except ValueError:
            self.token_info = {}
        client = (self.token_info or {}).get("client_id") or (self.token_info or {}).get("client") or "?"
        return Check(name, OK, f"valid (client {client})")

    def check_scopes(self) -> Check:
        name = "particle scopes"
        if self.token_info is None:
            return _skipped(name, "a valid token")
        scopes = self.token_info.get("scopes") or []
        if not scopes:
            # A user token (particle token create) lists no scopes: it may do whatever its user may.
            return Check(
                name,
                WARN,
                "the token lists no scopes: a user token, with every right of its user on every product",
                "prefer a product API user limited to the scopes below (README, one-time step 1)",
            )
        missing = [scope for scope in REQUIRED_SCOPES if scope not in scopes]
        if missing:
            described = [
                f"{scope} ({REQUIRED_SCOPES[scope][0]}"
                + ("" if REQUIRED_SCOPES[scope][1] else "; scope name unconfirmed: check the Console's list")
                + ")"
                for scope in missing
            ]
            return Check(
                name,
                FAIL,
                "missing " + ", ".join(described),
                "give the API user these scopes (Console: product -> Team -> API user) or create a new one "
                "with every scope (README, one-time step 1), then store its token in SSM",
            )
        unconfirmed = [s for s, (_, known) in REQUIRED_SCOPES.items() if not known]
        return Check(
            name,
            OK,
            f"all {len(REQUIRED_SCOPES)} needed scopes (names unconfirmed by Particle: "
            f"{', '.join(unconfirmed)})",
        )

    def check_expiry(self) -> Check:
        name = "particle expiry"
        if self.token_info is None:
            return _skipped(name, "a valid token")
        expires_at = self.token_info.get("expires_at")
        if not expires_at:
            return Check(name, OK, "the token never expires")
        try:
            when = datetime.fromisoformat(str(expires_at).replace("Z", "+00:00"))
        except ValueError:
            return Check(name, WARN, "expires_at is not a date Particle documents", "check the token by hand")
        days = (when - self.now()).total_seconds() / 86400
        if days < MIN_DAYS_LEFT:
            return Check(
                name,
                FAIL,
                f"the token expires in {max(days, 0):.1f} days ({when:%Y-%m-%d}); "
                f"the minimum is {MIN_DAYS_LEFT}",
                "replace it with a product API user's token, which does not expire (README, one-time "
                "step 1), "
                f"and store it: aws ssm put-parameter --name {self.parameters['ParticleTokenParameter']} "
                "--type SecureString --overwrite --value '...'",
            )
        return Check(name, OK, f"the token expires in {int(days)} days ({when:%Y-%m-%d})")

    def check_product(self) -> Check:
        name = "particle product"
        if self.token is None:
            return _skipped(name, "a valid token")
        product = self.parameters.get("ParticleProduct", "")
        try:
            response = self._particle(f"/v1/products/{quote(product, safe='')}/devices", per_page=1)
        except requests.RequestException as exc:
            return Check(
                name, FAIL, f"cannot reach Particle ({type(exc).__name__})", "retry; check the network"
            )
        if response.status_code == 200:
            meta = _json(response).get("meta") or {}
            total = meta.get("total_pages", meta.get("total_page"))
            count = f"{total} device(s)" if isinstance(total, int) else "reached"
            return Check(name, OK, f"product {product}: {count}")
        fix = {
            403: "the token's user is not on the product's team: use an API user of this product",
            404: "no such product: check the ParticleProduct parameter (product id or slug) and redeploy",
        }.get(response.status_code, "check the ParticleProduct parameter and the token")
        return Check(name, FAIL, f"listing product {product}'s devices answered {response.status_code}", fix)

    def check_ledger(self) -> Check:
        name = "particle ledger"
        if self.token is None:
            return _skipped(name, "a valid token")
        ledger = self.parameters["LedgerName"]
        scope = self.parameters["LedgerScope"]
        create = (
            f"create it in the Console (Ledger -> Cloud to Device, scope Device, name {ledger}); a Ledger's "
            "type and scope cannot change, so a wrong one needs a new name (LedgerName, and the firmware)"
        )
        if scope == "org":
            prefix = f"/v1/orgs/{quote(self.parameters['ParticleOrg'], safe='')}"
        elif scope == "sandbox":
            prefix = "/v1"
        else:
            return Check(
                name,
                FAIL,
                f"LedgerScope {scope}: Particle's SDK addresses Ledgers under /v1 or /v1/orgs/ORG only",
                "redeploy with LedgerScope sandbox (a sandbox product) or org plus ParticleOrg",
            )
        # particle-api-js 12.0.3 getLedger: GET {/v1 | /v1/orgs/ORG}/ledgers/NAME.
        try:
            response = self._particle(f"{prefix}/ledgers/{quote(ledger, safe='')}")
        except requests.RequestException as exc:
            return Check(
                name, FAIL, f"cannot reach Particle ({type(exc).__name__})", "retry; check the network"
            )
        if response.status_code == 404:
            return Check(name, FAIL, f"Ledger {ledger} does not exist under {prefix}", create)
        if response.status_code == 403:
            return Check(
                name,
                WARN,
                f"the token may not read Ledger definitions (403), so {ledger}'s type is unchecked",
                f"check in the Console that {ledger} is Cloud to Device and device-scoped",
            )
        if response.status_code != 200:
            return Check(name, FAIL, f"GET {prefix}/ledgers/{ledger} answered {response.status_code}", create)
        body = _json(response)
        definition = body.get("ledger") if isinstance(body.get("ledger"), dict) else body
        direction, ledger_scope = definition.get("direction"), definition.get("scope")
        wrong = []
        if direction != "Downstream":
            wrong.append(f"direction {direction or 'none'} (Cloud to Device is Downstream)")
        if ledger_scope != "Device":
            wrong.append(f"scope {ledger_scope or 'none'} (needs Device)")
        if definition.get("archived_at"):
            wrong.append("archived")
        if wrong:
            return Check(name, FAIL, f"Ledger {ledger}: " + ", ".join(wrong), create)
        return Check(name, OK, f"Ledger {ledger}: Cloud to Device, device-scoped")

    # ---- the status integration -------------------------------------------------------------------

    def check_webhook_secret(self) -> Check:
        name = "webhook secret"
        path = self.integration
        if path is None or not path.is_file():
            return Check(name, WARN, f"no integration file at {path}", "pass --integration FILE")
        try:
            hook = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return Check(name, FAIL, f"{path.name} is not JSON ({type(exc).__name__})", "fix the file")
        headers = {k.lower(): v for k, v in (hook.get("headers") or {}).items()}
        value = headers.get(SECRET_HEADER.lower())
        if not isinstance(value, str) or not value:
            return Check(
                name, FAIL, f"{path.name} sends no {SECRET_HEADER} header", "add it (firmware/README.md)"
            )
        if value.startswith("<") and value.endswith(">"):
            # The repository's copy: the secret goes only into the integration created in Particle.
            return Check(
                name,
                WARN,
                f"{path.name} holds the placeholder, not the secret: not compared",
                "pass --integration with the JSON given to Particle (its secret is compared by hash only)",
            )
        parameter = self.parameters.get(
            "WebhookSecretParameter", PARAMETER_DEFAULTS["WebhookSecretParameter"]
        )
        secret = self._secret("WebhookSecretParameter") if self.parameters else None
        if secret is None:
            return _skipped(name, f"the SSM parameter {parameter}")
        problems = []
        # Only the digests meet; neither value is printed or kept.
        if not hmac.compare_digest(_digest(value), _digest(secret)):
            problems.append(f"the {SECRET_HEADER} header of {path.name} differs from {parameter}")
        url, expected = hook.get("url", ""), self.outputs.get("WebhookUrl")
        if expected and not url.startswith("<") and "<" not in url and url != expected:
            problems.append(f"its url is not the stack's WebhookUrl ({expected})")
        if problems:
            return Check(
                name,
                FAIL,
                "; ".join(problems),
                f"set the integration's header to the value of {parameter} (Console: Integrations -> "
                "tokenflow-status -> Edit) and its URL to WebhookUrl; or store the integration's secret "
                f"with aws ssm put-parameter --name {parameter} --type SecureString --overwrite",
            )
        return Check(name, OK, f"the {SECRET_HEADER} header of {path.name} matches {parameter} (SHA-256)")

    # ---- Blynk ------------------------------------------------------------------------------------

    def check_blynk(self) -> Check:
        """The stack's Blynk region answers for its tokens, and the Blynk integration names it.

        The doctor holds no AuthToken: asking Blynk itself would mean reading one (through the reveal
        route, audited and often denied to operators, or from the table) into the operator's
        machine. The verification function asks Blynk for every confirmed device with the deployed
        settings, from where the stack runs, and the summary carries its answers by result (ok,
        no-data, invalid-token, wrong-region:<r>) without any token: that is what is read here.
        """
        name = "blynk region"
        if not self.parameters:
            return _skipped(name, "the stack")
        region = self.parameters.get("BlynkRegion") or PARAMETER_DEFAULTS["BlynkRegion"]
        problems: list[str] = []
        fixes: list[str] = []
        notes: list[str] = []
        # The integration JSON: the URL Particle sends the readings to.
        from tokenflow.blynk import region_of_url

        path = self.blynk_integration
        if path is not None and path.is_file():
            try:
                url = str(json.loads(path.read_text()).get("url", ""))
            except (OSError, ValueError) as exc:
                return Check(name, FAIL, f"{path.name} is not JSON ({type(exc).__name__})", "fix the file")
            named = region_of_url(url)
            if BLYNK_REGION_PLACEHOLDER in url:
                notes.append(f"{path.name} holds the {BLYNK_REGION_PLACEHOLDER} placeholder (use {region})")
            elif named != region:
                problems.append(f"{path.name} sends to {named or url.split('?')[0]}, not {region}")
                fixes.append(
                    f"set the Blynk integration's URL to https://{region}.blynk.cloud/external/api/batch/update"
                )
        # What Blynk answered the verification pass.
        liveness: dict[str, Any] | None = None
        if self.api is not None:
            try:
                liveness = (self.api("/summary") or {}).get("liveness")
            except Exception as exc:
                notes.append(f"the summary could not be read ({type(exc).__name__})")
        checks: dict[str, int] = {str(k): int(v) for k, v in ((liveness or {}).get("checks") or {}).items()}
        wrong = {k.split(":", 1)[1]: v for k, v in checks.items() if k.startswith("wrong-region:")}
        answered = checks.get("ok", 0) + checks.get("no-data", 0)
        invalid = checks.get("invalid-token", 0)
        if wrong:
            right = ", ".join(f"{n} token(s) belong to {r}" for r, n in sorted(wrong.items()))
            problems.append(f"Blynk {region} answered 308: {right}")
            target = max(wrong, key=lambda r: wrong[r])
            fixes.append(
                f"deploy with BlynkRegion={target} and point the Blynk integration at https://{target}.blynk.cloud"
            )
        elif invalid and not answered:
            problems.append(f'Blynk {region} answered "Invalid token." for every token checked ({invalid})')
            fixes.append("check the tokens' Blynk server and template; revoke tokens deleted in Blynk")
        if liveness and liveness.get("region") and liveness.get("region") != region:
            notes.append(f"the last walk asked {liveness.get('region')}; the next one asks {region}")
        if problems:
            return Check(name, FAIL, "; ".join(problems + notes), "; ".join(fixes))
        if not liveness or not (answered or liveness.get("live")):
            detail = f"{region}: no confirmed device checked in Blynk yet"
            return Check(name, WARN, "; ".join([detail, *notes]), "run again once devices are confirmed")
        detail = (
            f"{region} answered for {answered} token(s) (ok {checks.get('ok', 0)}, no data "
            f"{checks.get('no-data', 0)}), {liveness.get('live')} device(s) live, "
            f"as of {liveness.get('as_of')}"
        )
        return Check(name, OK, "; ".join([detail, *notes]))


def run(doctor: Doctor, out: IO[str], colour: bool = False) -> int:
    """Print each check as it finishes; 1 if any failed."""
    failed = 0
    for check in doctor.checks():
        print(check.line(colour), file=out, flush=True)
        failed += check.status == FAIL
    summary = f"{failed} check(s) failed" if failed else "all checks passed"
    print(summary, file=out, flush=True)
    return 1 if failed else 0


def _skipped(name: str, needs: str) -> Check:
    return Check(name, SKIP, f"not checked: needs {needs}")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _function_name(arn: str) -> str:
    """``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`` -> NAME (a bare name stays)."""
    parts = arn.split(":")
    return parts[6] if len(parts) >= 7 and parts[5] == "function" else arn


def _prefix(config: dict[str, Any]) -> str:
    rules = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return next((r.get("Value", "") for r in rules if r.get("Name", "").lower() == "prefix"), "")


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _aws_reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message") or exc.response.get("Error", {}).get("Code"))
    if isinstance(exc, BotoCoreError):
        return str(exc)
    return "no such stack"
