"""A Streamlit client that is no browser: it speaks the app's websocket protocol directly (BackMsg
out, ForwardMsg in), as a crafted client in a served room could. It reruns a page, reads the
widgets and texts the run drew, clicks a button or sets a text input by widget ID, and sends any
other BackMsg (e.g. clear_cache)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.sync.client import connect

PAGE_RUN_ENDED = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}


@dataclass
class Drawn:
    """What one run of a page drew."""

    widgets: dict[str, str] = field(default_factory=dict)  # label -> widget ID
    kinds: dict[str, str] = field(default_factory=dict)  # label -> element kind ("number_input", ...)
    texts: list[str] = field(default_factory=list)  # markdown, captions, alerts, exceptions
    exceptions: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.texts)


class StreamlitClient:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self._connection = connect(url.replace("http://", "ws://") + "/_stcore/stream", subprotocols=["streamlit"],
                                   max_size=None, open_timeout=timeout)
        self.ws = self._connection.__enter__()  # as `with connect(...)` does; close() exits it
        self.timeout = timeout
        self.page_name = ""
        self.values: dict[str, WidgetState] = {}  # widget states a browser would send with every rerun

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def send(self, message: BackMsg) -> None:
        self.ws.send(message.SerializeToString())

    def run(self, page_name: str | None = None, *, trigger: str | None = None) -> Drawn:
        """Rerun the page (a new one when page_name is given) and read until the run ends."""
        message = BackMsg()
        if page_name is not None:
            self.page_name, self.values = page_name, {}
        message.rerun_script.page_name = self.page_name
        states = list(self.values.values())
        if trigger:
            states.append(WidgetState(id=trigger, trigger_value=True))
        message.rerun_script.widget_states.widgets.extend(states)
        self.send(message)
        return self._read_run()

    def click(self, drawn: Drawn, label: str) -> Drawn:
        return self.run(trigger=drawn.widgets[label])

    def type(self, drawn: Drawn, label: str, value: str) -> Drawn:
        widget_id = drawn.widgets[label]
        self.values[widget_id] = WidgetState(id=widget_id, string_value=value)
        return self.run()

    def set_bool(self, drawn: Drawn, label: str, value: bool) -> Drawn:
        """A checkbox or a toggle switched on or off."""
        widget_id = drawn.widgets[label]
        self.values[widget_id] = WidgetState(id=widget_id, bool_value=value)
        return self.run()

    def set_number(self, drawn: Drawn, label: str, value: float) -> Drawn:
        """Send any double for a number input, NaN and ±inf included (a browser sends neither)."""
        widget_id = drawn.widgets[label]
        self.values[widget_id] = WidgetState(id=widget_id, double_value=value)
        return self.run()

    def _read_run(self) -> Drawn:
        drawn, started, deadline = Drawn(), False, time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the page's run did not end within {self.timeout:g} s")
            payload = self.ws.recv(remaining)
            if isinstance(payload, str):
                continue
            message = ForwardMsg()
            message.ParseFromString(payload)
            kind = message.WhichOneof("type")
            if kind == "new_session" and not message.metadata.run.fragment_ids:
                started, drawn = True, Drawn()  # st.rerun() ends a run early and starts another
            elif kind == "delta" and started and message.delta.WhichOneof("type") == "new_element":
                self._read_element(message.delta.new_element, drawn)
            elif kind == "script_finished" and started and message.script_finished in PAGE_RUN_ENDED:
                return drawn

    @staticmethod
    def _read_element(element, drawn: Drawn) -> None:
        kind = element.WhichOneof("type")
        if kind is None:
            return
        body = getattr(element, kind)
        if kind == "exception":
            drawn.exceptions.append(f"{body.type}: {body.message}" + "".join(body.stack_trace))
        if hasattr(body, "id") and hasattr(body, "label") and body.id:
            drawn.widgets[body.label] = body.id
            drawn.kinds[body.label] = kind
        if hasattr(body, "body") and isinstance(body.body, str):
            drawn.texts.append(body.body)
