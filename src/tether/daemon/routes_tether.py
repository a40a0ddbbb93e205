"""tether's own API extensions for troubleshooting (no Docker equivalent):

POST /tether/explain   {"From", "To", "Port": "80/tcp" or "", "Probe": bool}
                       -> {"Reachable", "Reasons": [{"Step", "Ok", "Object", "Text", "Fix"}], ...}
GET  /tether/doctor    what differs between the store and the kernel / the cluster
POST /tether/doctor    the same, then repair what it found (?repair=1), then check again
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.api.decode import Model
from tether.api.networks import check_text
from tether.daemon.http import Request, Response, Router, json_response

if TYPE_CHECKING:
    from tether.daemon.app import Daemon


class ExplainRequest(Model):
    go_name = "tether.ExplainRequest"
    From: str | None = None
    To: str | None = None
    Port: str | None = None
    Probe: bool | None = None

    def validate(self) -> None:
        check_text("source", self.From)
        check_text("destination", self.To)
        check_text("port", self.Port)


def register(router: Router, daemon: Daemon) -> None:
    async def explain(req: Request) -> Response:
        from tether.explain.explain import Explainer

        body = req.decode(ExplainRequest, ExplainRequest())
        x = await Explainer(daemon).explain(
            body.From or "", body.To or "", body.Port or "", bool(body.Probe)
        )
        return json_response(x.to_api())

    async def doctor(req: Request) -> Response:
        from tether.explain.doctor import Doctor

        doc = Doctor(daemon)
        if req.method == "POST" and req.flag("repair"):
            return json_response(await doc.repair())
        return json_response(await doc.check_api())

    router.add("POST", "/tether/explain", explain)
    router.add("GET", "/tether/doctor", doctor)
    router.add("POST", "/tether/doctor", doctor)
