#!/usr/bin/env python3
"""A small CLI around the official MCP Python SDK (mcp==2.3.0), driven by the
Rust integration tests to talk to an MCP endpoint (Streamable HTTP, or the
2024-11-05 HTTP+SSE transport with --transport sse) as a real client would.

Usage:
    python tests/py/mcp_client.py --url URL --mode legacy|modern|auto \
        [--transport streamable-http|sse] [--header 'K: V' ...] [--timeout SECS] \
        COMMAND [ARGS]

Commands:
    list-tools
    call TOOL JSON_ARGS [--progress] [--sample TEXT] [--elicit JSON] [--roots URI ...]
        --sample / --elicit / --roots declare the sampling / elicitation / roots
        capability and answer the server's requests (sampling: an assistant
        message TEXT; elicitation: accept with content JSON; roots: URIs);
        the requests received are reported in "asked" ({method, params})
    list-prompts
    get-prompt NAME JSON_ARGS
    list-resources
    read-resource URI
    logs TOOL JSON_ARGS [--level LEVEL] (--until DATA | --count N)
        calls TOOL and collects the log messages (notifications/message) the
        client receives until one whose data is DATA (or N of them); legacy:
        sets LEVEL with logging/setLevel first; modern: names LEVEL on every
        request
    watch URI --trigger TOOL [--trigger-args JSON] [--unsubscribe]
        subscribes to URI (legacy: resources/subscribe; modern: a
        subscriptions/listen stream), calls TOOL, and waits for
        notifications/resources/updated of URI; --unsubscribe then
        unsubscribes (legacy)
    cancel TOOL JSON_ARGS
        calls TOOL with a progress token, and once the first progress
        notification arrives (the tool is running upstream) abandons the call
        the SDK's way (legacy: notifications/cancelled; modern: the request's
        response stream is closed); reports "cancelled" (the call did not
        finish first) and "progressBeforeCancel"
    complete PROMPT ARGUMENT VALUE
        completion/complete for an argument of a prompt; reports "values"
    tools-changed --trigger TOOL [--trigger-args JSON]
        listens for notifications/tools/list_changed (legacy: on the session's
        GET stream; modern: a subscriptions/listen stream asking for it),
        calls TOOL, waits for the notification, then lists the tools again
        and reports them in "tools"

Modes:
    legacy  2025-11-25 `initialize` handshake (stateful, Mcp-Session-Id).
    modern  2026-07-28: one `server/discover` probe, then stateless requests
            (protocol version, client info and capabilities in every request's
            `_meta`, Mcp-Protocol-Version / Mcp-Method / Mcp-Name headers).
            No fallback: a server that does not speak 2026-07-28 is an error.
    auto    the SDK default: try server/discover, fall back to initialize.

Output: one JSON object on stdout, always carrying "protocolVersion".
Exit codes: 0 success; 2 MCP (JSON-RPC) error, stdout is
{"error": "MCP error N: msg", "code": N, "message": "msg", "data": ...,
"protocolVersion": "..." or null}; 1 any other failure (connection refused, bad
arguments, ...), stdout is {"error": "...", "protocolVersion": ...}.
A tool that fails *as a tool* (CallToolResult.isError) is a success (exit 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types.version import LATEST_MODERN_VERSION, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

EXIT_MCP_ERROR = 2
EXIT_OTHER_ERROR = 1

# The negotiated version, kept outside `run` so error output can report it too
# (None when the failure happened before or during negotiation).
NEGOTIATED: dict[str, str | None] = {"protocolVersion": None}


class UsageError(Exception):
    pass


def dump(model: Any) -> Any:
    """A pydantic model (or list of them) as plain JSON-able data: wire names, only fields the server sent."""
    if isinstance(model, list):
        return [dump(m) for m in model]
    if hasattr(model, "model_dump"):
        return model.model_dump(by_alias=True, mode="json", exclude_unset=True)
    return model


def parse_headers(raw: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header expects 'Name: value', got {item!r}")
        headers[name.strip()] = value.strip()
    return headers


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


async def discover_modern(client: Client) -> None:
    """Probe `server/discover` for real and adopt its result (no initialize fallback).

    `Client(mode="2026-07-28")` only *synthesizes* a DiscoverResult; this replaces
    it with the server's own, so a server without 2026-07-28 support fails here.
    Mirrors `ClientSession.discover()`: one retry at a mutual version on -32022.
    """
    session = client.session
    try:
        raw = await session.send_discover(LATEST_MODERN_VERSION)
    except MCPError as e:
        if e.code != types.UNSUPPORTED_PROTOCOL_VERSION:
            raise
        try:
            supported = types.UnsupportedProtocolVersionErrorData.model_validate(e.error.data).supported
        except ValidationError:
            raise e from None
        mutual = [v for v in MODERN_PROTOCOL_VERSIONS if v in supported]
        if not mutual:
            raise
        raw = await session.send_discover(mutual[-1])
    result = types.DiscoverResult.model_validate(raw)
    session.adopt(result)  # raises RuntimeError if the server lists no modern version


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = parse_headers(args.header or [])
    if args.mode == "legacy":
        mode = "legacy"
    elif args.mode == "modern":
        mode = LATEST_MODERN_VERSION
    else:
        mode = "auto"

    # Validate command arguments before any network traffic.
    tool_args: dict[str, Any] = {}
    prompt_args: dict[str, Any] = {}
    if args.command in ("call", "logs", "cancel"):
        tool_args = parse_json_object(args.json_args, "JSON_ARGS")
    elif args.command == "get-prompt":
        prompt_args = parse_json_object(args.json_args, "JSON_ARGS")

    asked: list[dict[str, Any]] = []

    async def on_sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append({"method": "sampling/createMessage", "params": dump(params)})
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=args.sample),
            model="metamcp-test-model",
            stop_reason="endTurn",
        )

    async def on_elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append({"method": "elicitation/create", "params": dump(params)})
        return types.ElicitResult(action="accept", content=json.loads(args.elicit))

    async def on_roots(context: Any) -> types.ListRootsResult:
        asked.append({"method": "roots/list", "params": None})
        return types.ListRootsResult(roots=[types.Root(uri=uri) for uri in args.roots])

    client_requests: dict[str, Any] = {}
    if getattr(args, "sample", None) is not None:
        client_requests["sampling_callback"] = on_sampling
    if getattr(args, "elicit", None) is not None:
        client_requests["elicitation_callback"] = on_elicit
    if getattr(args, "roots", None):
        client_requests["list_roots_callback"] = on_roots

    logs: list[dict[str, Any]] = []
    log_seen = anyio.Event()
    updates: list[str] = []
    update_seen = anyio.Event()
    tools_changed = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(dump(params))
        if args.command == "logs" and (
            params.data == args.until or (args.count is not None and len(logs) >= args.count)
        ):
            log_seen.set()

    async def on_message(message: Any) -> None:
        # Modern clients read updates off their listen stream (below), which
        # the SDK also hands to this handler.
        if args.mode != "modern" and isinstance(message, types.ToolListChangedNotification):
            tools_changed.set()
        if args.mode != "modern" and isinstance(message, types.ResourceUpdatedNotification):
            updates.append(message.params.uri)
            if args.command == "watch" and message.params.uri == args.uri:
                update_seen.set()

    async with contextlib.AsyncExitStack() as stack:
        if args.stdio:
            # A stdio server: the JSON list is the command and its arguments.
            command = json.loads(args.stdio)
            transport = stdio_client(StdioServerParameters(command=command[0], args=command[1:]))
        elif args.transport == "sse":
            # The 2024-11-05 transport: GET the event stream, POST to the
            # endpoint it names. It predates server/discover: legacy only.
            if args.mode == "modern":
                raise UsageError("--transport sse speaks the initialize handshake only")
            transport = sse_client(args.url, headers=headers or None, sse_read_timeout=args.timeout)
        else:
            http_client = await stack.enter_async_context(create_mcp_http_client(headers=headers or None))
            transport = streamable_http_client(args.url, http_client=http_client)
        client = Client(
            transport,
            mode=mode,
            cache=None,  # always hit the wire: the tests observe the server
            read_timeout_seconds=args.timeout,
            client_info=types.Implementation(name="metamcp-test-client", version="0.1.0"),
            logging_callback=on_log,
            message_handler=on_message,
            # Modern requests name their level; legacy ones use setLevel below.
            log_level=getattr(args, "level", None) if args.mode == "modern" else None,
            **client_requests,
        )
        async with client:
            if args.mode == "modern":
                await discover_modern(client)
            NEGOTIATED["protocolVersion"] = client.protocol_version
            out: dict[str, Any] = {"protocolVersion": client.protocol_version}

            if args.command == "list-tools":
                tools: list[dict[str, Any]] = []
                cursor: str | None = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    for tool in page.tools:
                        entry: dict[str, Any] = {
                            "name": tool.name,
                            "description": tool.description,
                            "inputSchema": tool.input_schema,
                        }
                        tools.append(entry)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                out["tools"] = tools

            elif args.command == "call":
                progress: list[dict[str, Any]] = []

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress.append({"progress": value, "total": total, "message": message})

                result = await client.call_tool(
                    args.tool,
                    tool_args,
                    progress_callback=on_progress if args.progress else None,
                )
                out["isError"] = bool(result.is_error)
                out["content"] = dump(list(result.content))
                out["structuredContent"] = result.structured_content
                out["progress"] = progress
                out["asked"] = asked

            elif args.command == "cancel":
                started = anyio.Event()
                seen: list[float] = []
                finished: list[bool] = []

                async def on_started(value: float, total: float | None, message: str | None) -> None:
                    seen.append(value)
                    started.set()

                async def call_until_cancelled() -> None:
                    await client.call_tool(args.tool, tool_args, progress_callback=on_started)
                    finished.append(True)

                async with anyio.create_task_group() as group:
                    group.start_soon(call_until_cancelled)
                    with anyio.fail_after(args.timeout):
                        await started.wait()
                    # Cancelling the task abandons the request: the SDK sends
                    # the cancellation in the negotiated era's spelling.
                    group.cancel_scope.cancel()
                out["cancelled"] = not finished
                out["progressBeforeCancel"] = len(seen)

            elif args.command == "list-prompts":
                out.update(dump(await client.list_prompts()))

            elif args.command == "get-prompt":
                str_args = {k: v if isinstance(v, str) else json.dumps(v) for k, v in prompt_args.items()}
                out.update(dump(await client.get_prompt(args.name, str_args)))

            elif args.command == "list-resources":
                out.update(dump(await client.list_resources()))

            elif args.command == "read-resource":
                out.update(dump(await client.read_resource(args.uri)))

            elif args.command == "logs":
                if args.level and args.mode != "modern":
                    await client.set_logging_level(args.level)
                result = await client.call_tool(args.tool, tool_args)
                out["isError"] = bool(result.is_error)
                out["content"] = dump(list(result.content))
                with anyio.fail_after(args.timeout):
                    await log_seen.wait()
                out["logs"] = logs

            elif args.command == "watch":
                trigger_args = parse_json_object(args.trigger_args, "--trigger-args")
                if args.mode == "modern":
                    async with client.listen(resource_subscriptions=[args.uri]) as sub:
                        honored = sub.honored.resource_subscriptions if sub.honored else None
                        out["honored"] = list(honored or [])
                        await client.call_tool(args.trigger, trigger_args)
                        with anyio.fail_after(args.timeout):
                            async for event in sub:
                                uri = getattr(event, "uri", None)
                                if uri is not None:
                                    updates.append(uri)
                                    if uri == args.uri:
                                        break
                else:
                    await client.subscribe_resource(args.uri)
                    await client.call_tool(args.trigger, trigger_args)
                    with anyio.fail_after(args.timeout):
                        await update_seen.wait()
                    if args.unsubscribe:
                        await client.unsubscribe_resource(args.uri)
                out["updated"] = updates

            elif args.command == "complete":
                done = await client.complete(
                    types.PromptReference(type="ref/prompt", name=args.prompt),
                    {"name": args.argument, "value": args.value},
                )
                out["values"] = list(done.completion.values)

            elif args.command == "tools-changed":
                trigger_args = parse_json_object(args.trigger_args, "--trigger-args")
                if args.mode == "modern":
                    async with client.listen(tools_list_changed=True) as sub:
                        await client.call_tool(args.trigger, trigger_args)
                        with anyio.fail_after(args.timeout):
                            async for event in sub:
                                if isinstance(event, ToolsListChanged):
                                    break
                else:
                    await client.call_tool(args.trigger, trigger_args)
                    with anyio.fail_after(args.timeout):
                        await tools_changed.wait()
                out["changed"] = True
                page = await client.list_tools()
                out["tools"] = [{"name": t.name, "description": t.description} for t in page.tools]

            else:  # pragma: no cover - argparse rejects unknown commands
                raise UsageError(f"unknown command {args.command!r}")

            out["protocolVersion"] = client.protocol_version
            return out


def find_exception(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """Find the first `kind` in an exception, looking inside (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_exception(inner, kind)
            if found is not None:
                return found
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Drive a real MCP client (Python SDK 2.x) against a URL.")
    p.add_argument("--url", help="Streamable HTTP endpoint, e.g. http://127.0.0.1:8080/mcp")
    p.add_argument("--stdio", help='instead of --url: a stdio server to spawn, as a JSON list ["cmd", "arg", ...]')
    p.add_argument("--mode", choices=["legacy", "modern", "auto"], default="legacy")
    p.add_argument(
        "--transport",
        choices=["streamable-http", "sse"],
        default="streamable-http",
        help="with --url: Streamable HTTP (default) or the 2024-11-05 HTTP+SSE transport",
    )
    p.add_argument("--header", action="append", metavar="K:V", help="extra HTTP header (repeatable)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request read timeout in seconds")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list-tools")
    c = sub.add_parser("call")
    c.add_argument("tool")
    c.add_argument("json_args", nargs="?", default="{}")
    c.add_argument("--progress", action="store_true", help="request progress notifications and report them")
    c.add_argument("--sample", help="answer sampling/createMessage with this assistant text")
    c.add_argument("--elicit", help="accept elicitation/create with this JSON content")
    c.add_argument("--roots", nargs="+", help="answer roots/list with these URIs")
    sub.add_parser("list-prompts")
    g = sub.add_parser("get-prompt")
    g.add_argument("name")
    g.add_argument("json_args", nargs="?", default="{}")
    sub.add_parser("list-resources")
    r = sub.add_parser("read-resource")
    r.add_argument("uri")
    lg = sub.add_parser("logs")
    lg.add_argument("tool")
    lg.add_argument("json_args", nargs="?", default="{}")
    lg.add_argument("--level", help="log level to ask for (debug ... emergency)")
    until = lg.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", help="wait for the log message with this data")
    until.add_argument("--count", type=int, help="wait for this many log messages")
    w = sub.add_parser("watch")
    w.add_argument("uri")
    w.add_argument("--trigger", required=True, help="tool to call once subscribed")
    w.add_argument("--trigger-args", default="{}")
    w.add_argument("--unsubscribe", action="store_true")
    cn = sub.add_parser("cancel")
    cn.add_argument("tool")
    cn.add_argument("json_args")
    cp = sub.add_parser("complete")
    cp.add_argument("prompt")
    cp.add_argument("argument")
    cp.add_argument("value")
    tc = sub.add_parser("tools-changed")
    tc.add_argument("--trigger", required=True, help="tool to call once listening")
    tc.add_argument("--trigger-args", default="{}")
    return p


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.url is None) == (args.stdio is None):
        parser.error("give exactly one of --url and --stdio")
    try:
        out = anyio.run(run, args)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a JSON error
        if isinstance(exc, KeyboardInterrupt):
            raise
        mcp_err = find_exception(exc, MCPError)
        if isinstance(mcp_err, MCPError):
            emit(
                {
                    "error": f"MCP error {mcp_err.code}: {mcp_err.message}",
                    "code": mcp_err.code,
                    "message": mcp_err.message,
                    "data": mcp_err.data,
                    "protocolVersion": NEGOTIATED["protocolVersion"],
                }
            )
            return EXIT_MCP_ERROR
        usage = find_exception(exc, UsageError)
        inner = usage if usage is not None else exc
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        emit({"error": f"{type(inner).__name__}: {inner}", "protocolVersion": NEGOTIATED["protocolVersion"]})
        return EXIT_OTHER_ERROR
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
