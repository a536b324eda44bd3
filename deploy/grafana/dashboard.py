"""The Grafana dashboard as code: this file generates deploy/grafana/frosted-dashboard.json, the JSON that
Grafana's file provider loads (provisioning/dashboards/frosted.yaml). Edit the panels here, never the JSON.

    .venv/bin/python deploy/grafana/dashboard.py           # rewrite frosted-dashboard.json
    .venv/bin/python deploy/grafana/dashboard.py --check   # exit 1 if the committed JSON is not what this makes

Built with grafana-foundation-sdk's Grafana 11 build (the dev extra pins it). tests/test_dashboard.py checks that
this reproduces the committed file byte for byte, that every query parses (promtool) and names metrics that
exist, and, against a real Prometheus scraping a live agent and tail, that every query returns data, except
the Triton row's (nv_inference_*: Triton's own metrics, only there where Triton serves the tail):
tests/test_dashboard_triton.py runs those against a Prometheus scraping a real tritonserver that an agent
streams to through triton://.

Metrics: edge_agent/metrics.py (frosted_edge_*, per camera) and cloud_tail/metrics.py (frosted_tail_*, all
cameras: the tail's metrics carry no camera label).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import heatmap, prometheus, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "frosted-dashboard.json"

UID = "frosted-overview"  # links and bookmarks to the dashboard keep working across regenerations
TITLE = "Frosted: edge and tail"
DATASOURCE_VARIABLE = "DS_PROMETHEUS"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${" + DATASOURCE_VARIABLE + "}")
CAMERAS = 'camera=~"$camera"'  # the camera variable: multi-valued, "All" is the regex .*
RATE = "$__rate_interval"  # Grafana's: at least four scrape intervals (the datasource's timeInterval)

# The end-to-end latency budget: FrostedEndToEndLatencyHigh in deploy/prometheus/alerts.yml fires above it.
END_TO_END_BUDGET_SECONDS = 0.06

TRITON_ROW = "Triton (when it serves the tail)"
# Triton's own per-model metrics as tritonserver 2.51 exports them (docs/user_guide/metrics.md in
# triton-inference-server/server): counters and a gauge per model and version, durations in microseconds, and
# a summary per phase with --metrics-config=summary_latencies=true (the k8s Deployment passes it, and so does
# tests/rig/triton.py). The Triton row uses only these; tests/test_dashboard_triton.py checks that this is the
# list of nv_inference_* families a live tritonserver exports and that the row charts every one.
TRITON_METRICS = frozenset({
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
    "nv_inference_request_summary_us", "nv_inference_queue_summary_us", "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us", "nv_inference_compute_output_summary_us",
})
# The queue p95 Triton's HPA scales at (deploy/k8s/live/overlays/triton/triton-hpa.yaml: averageValue 20m, the
# largest over a pod's models), drawn as the red line of the panel that shows it.
TRITON_QUEUE_P95_TARGET_SECONDS = 0.02


def needs_triton(expr: str) -> bool:
    """Whether ``expr`` reads Triton's metrics: it returns data only where Triton serves the tail and Prometheus
    scrapes Triton's metrics port (8002), so the live test cannot ask it for data."""
    return "nv_inference_" in expr


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "heatmap", "table"] = "timeseries"  # table: one row per series, its labels now
    threshold: float | None = None  # drawn as a red line: an alert's threshold


@dataclass(frozen=True)
class Row:
    title: str
    charts: tuple[Chart, ...]
    collapsed: bool = False


def quantile(q: float, metric: str, by: str = "", selector: str = "") -> str:
    """``histogram_quantile`` of a prometheus-client histogram over Grafana's rate window, per ``by``."""
    matchers = "{" + selector + "}" if selector else ""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q:g}, sum by ({group}) (rate({metric}_bucket{matchers}[{RATE}])))"


def mean(metric: str, by: str = "", selector: str = "") -> str:
    """A histogram's mean over Grafana's rate window: rate of its sum over rate of its count."""
    matchers = "{" + selector + "}" if selector else ""
    group = f"sum by ({by}) " if by else "sum "
    return (f"{group}(rate({metric}_sum{matchers}[{RATE}])) / {group}(rate({metric}_count{matchers}[{RATE}]))")


def per_request_seconds(*durations_us: str) -> str:
    """Triton's cumulative duration counters (microseconds), summed, per successful request, in seconds."""
    total = " + ".join(f"sum by (model) (rate({duration}[{RATE}]))" for duration in durations_us)
    if len(durations_us) > 1:
        total = f"({total})"
    return f"{total} / sum by (model) (rate(nv_inference_request_success[{RATE}])) / 1e6"


def triton_quantile(q: float, summary_us: str, by: str = "model") -> str:
    """A quantile of one of Triton's summaries (microseconds), in seconds: the largest over what ``by`` merges
    (model versions, replicas). Triton computes it over its own sliding window, not Grafana's time range."""
    return f'max by ({by}) ({summary_us}{{quantile="{q:g}"}}) / 1e6'


EDGE = Row("Edge agent (per camera)", (
    Chart("Frames per second per camera",
          "Frames answered with boxes per second (frosted_edge_frames_total).", "short",
          (Query(f"sum by (camera) (rate(frosted_edge_frames_total{{{CAMERAS}}}[{RATE}]))", "{{camera}}"),)),
    Chart("End-to-end p99 per camera",
          "Capture to boxes back on the site, p99. The red line is the alert's budget "
          "(FrostedEndToEndLatencyHigh, 60 ms).", "s",
          (Query(quantile(0.99, "frosted_edge_stage_seconds", "camera", f'stage="end_to_end", {CAMERAS}'),
                 "{{camera}}"),),
          threshold=END_TO_END_BUDGET_SECONDS),
    Chart("p50 per stage",
          "Median time of each stage, over the selected cameras (frosted_edge_stage_seconds). tail_queue and "
          "tail_compute are the tail's own timings, sent back with each frame's boxes.", "s",
          (Query(quantile(0.5, "frosted_edge_stage_seconds", "stage", CAMERAS), "{{stage}}"),)),
    Chart("p99 per stage",
          "p99 of each stage, over the selected cameras: which stage grew when end-to-end p99 did.", "s",
          (Query(quantile(0.99, "frosted_edge_stage_seconds", "stage", CAMERAS), "{{stage}}"),)),
    Chart("Dropped frames per camera by reason",
          "Frames per second dropped: keep_latest (replaced by a newer frame before processing; by design when "
          "the camera outpaces the device) or uplink (sent and never answered).", "short",
          (Query(f"sum by (camera, reason) (rate(frosted_edge_frames_dropped_total{{{CAMERAS}}}[{RATE}]))",
                 "{{camera}} {{reason}}"),)),
    Chart("Reconnects by link",
          "Reconnections per rate window: link=source (the camera) or link=uplink (the stream to the tail).",
          "short",
          (Query(f"sum by (camera, link) (increase(frosted_edge_reconnects_total{{{CAMERAS}}}[{RATE}]))",
                 "{{camera}} {{link}}"),)),
    Chart("Uplink bytes/s per camera",
          "Activation payload bytes sent per camera, and what the tail accepted from all cameras.", "Bps",
          (Query(f"sum by (camera) (rate(frosted_edge_uplink_bytes_total{{{CAMERAS}}}[{RATE}]))", "{{camera}}"),
           Query(f"sum(rate(frosted_tail_received_bytes_total[{RATE}]))", "tail: accepted, all cameras"))),
    Chart("Tail batch size per camera (edge side)",
          "Size of the tail batch each camera's frames were computed in, as the agent saw it in the answers "
          "(frosted_edge_tail_batch_size): mean and p99. Quantiles interpolate within a bucket: batches of "
          "one read 0.99.", "short",
          (Query(mean("frosted_edge_tail_batch_size", "camera", CAMERAS), "{{camera}} mean"),
           Query(quantile(0.99, "frosted_edge_tail_batch_size", "camera", CAMERAS), "{{camera}} p99"))),
    Chart("asyncio tasks, agent and tail",
          "Tasks alive on each process's event loop (frosted_edge_asyncio_tasks, frosted_tail_asyncio_tasks): "
          "flat in a healthy service (bench/results/soak.md); a steady climb is a leak.", "short",
          (Query("sum by (instance) (frosted_edge_asyncio_tasks)", "agent {{instance}}"),
           Query("sum by (instance) (frosted_tail_asyncio_tasks)", "tail {{instance}}"))),
    Chart("Heads: runtime, device, precision, profile",
          "What runs each agent's head and the noise profile it sends (frosted_edge_head_info), one row per "
          "agent: which of a fleet run on a GPU, which are int8 (another head: the tail must be told to serve "
          "it, frosted tail --serve-precision).", "short",
          (Query("max by (instance, runtime, device, precision, profile) (frosted_edge_head_info)", ""),),
          kind="table"),
))

TAIL = Row("Cloud tail (all cameras)", (
    Chart("Tail frames by outcome",
          "Activation frames per second received by the tail: accepted, invalid (a malformed tensor), "
          "unknown_profile (a noise profile the tail does not serve).", "short",
          (Query(f"sum by (outcome) (rate(frosted_tail_frames_total[{RATE}]))", "{{outcome}}"),)),
    Chart("Tail queue vs compute time",
          "Time a frame waits for its batch to start (queue) against the batch's tail + post-processing time "
          "(compute), p50 and p99. Queue growing past compute: the tail is saturated.", "s",
          (Query(quantile(0.99, "frosted_tail_queue_seconds"), "queue p99"),
           Query(quantile(0.99, "frosted_tail_compute_seconds"), "compute p99"),
           Query(quantile(0.5, "frosted_tail_queue_seconds"), "queue p50"),
           Query(quantile(0.5, "frosted_tail_compute_seconds"), "compute p50"))),
    Chart("Tail batch size (tail side)",
          "Frames per tail batch across all streams (frosted_tail_batch_size): mean and p99 (interpolated "
          "within a bucket: batches of one read 0.99). --max-batch caps it.", "short",
          (Query(mean("frosted_tail_batch_size"), "mean"),
           Query(quantile(0.99, "frosted_tail_batch_size"), "p99"))),
    Chart("Tail batch size distribution",
          "Batches per rate window by size bucket (frosted_tail_batch_size_bucket).", "short",
          (Query(f"sum by (le) (increase(frosted_tail_batch_size_bucket[{RATE}]))", "{{le}}"),),
          kind="heatmap"),
    Chart("Open streams",
          "Detect streams open now, per tail replica (frosted_tail_streams): one per camera.", "short",
          (Query("sum by (instance) (frosted_tail_streams)", "{{instance}}"),)),
    Chart("Refused streams by reason",
          "Detect streams the tail's limits refused per rate window: max_streams, max_streams_per_connection, "
          "max_streams_per_client, watches (health Watch streams; RESOURCE_EXHAUSTED), idle (closed after "
          "--idle-timeout-seconds without a frame).", "short",
          (Query(f"sum by (reason) (increase(frosted_tail_streams_refused_total[{RATE}]))", "{{reason}}"),)),
    Chart("Connections: open and refused",
          "Client TCP connections open now per replica (frosted_tail_connections), and those the tail's gate reset "
          "at once per rate window, by reason (frosted_tail_connections_refused_total): max_connections_per_client "
          "is one address past its share (a flood, or many agents behind one NAT), max_connections the tail full.",
          "short",
          (Query("sum by (instance) (frosted_tail_connections)", "open {{instance}}"),
           Query(f"sum by (reason) (increase(frosted_tail_connections_refused_total[{RATE}]))", "refused {{reason}}"))),
    Chart("Queued frames",
          "Frames waiting for a tail batch now, per replica (frosted_tail_queued_frames): near the batch size in a "
          "healthy tail; a steady climb means the tail cannot keep up with its cameras.", "short",
          (Query("sum by (instance) (frosted_tail_queued_frames)", "{{instance}}"),)),
    Chart("Served profiles",
          "What each tail replica serves (frosted_tail_served_info): a profile (clean: none) at the precision of "
          "the heads it takes frames from, its split, and the runtime and device its tail runs on. An agent "
          "whose head is not listed here is refused (FAILED_PRECONDITION; unknown_profile frames).", "short",
          (Query("max by (instance, profile, head_precision, split, runtime, device) (frosted_tail_served_info)",
                 ""),),
          kind="table"),
))

TRITON = Row(TRITON_ROW, (
    Chart("Triton requests per second by model",
          "Inference requests Triton answered (nv_inference_request_success) and failed "
          "(nv_inference_request_failure) per second, per model: the ensemble the agents call is named after "
          "the noise profile, and its steps (PROFILE.tail-python, PROFILE.boxes) count each request again. "
          "Compare with \"Tail frames by outcome\". A request Triton refuses while checking it (wrong shape "
          "or byte size: INVALID_ARGUMENT) reaches neither counter. Needs a scrape job for Triton's metrics port "
          "(8002, prometheus.yml); empty otherwise.", "reqps",
          (Query(f"sum by (model) (rate(nv_inference_request_success[{RATE}]))", "{{model}} ok"),
           Query(f"sum by (model) (rate(nv_inference_request_failure[{RATE}]))", "{{model}} failed"))),
    Chart("Triton failed requests by reason",
          "Failed requests per rate window, per model and reason: REJECTED (the scheduler's queue refused it), "
          "CANCELED (the client went away: an agent reopening its stream), BACKEND (the model raised), OTHER.",
          "short",
          (Query(f"sum by (model, reason) (increase(nv_inference_request_failure[{RATE}]))",
                 "{{model}} {{reason}}"),)),
    Chart("Triton queue vs compute time per request",
          "Mean time per successful request in Triton's scheduling queue against computing it (input, "
          "inference and output), and the whole request inside Triton, from its cumulative microsecond "
          "counters. The ensemble itself never queues: the wait for a batch is in its steps' dynamic batchers "
          "(PROFILE.tail-python). Compare with \"Tail queue vs compute time\".", "s",
          (Query(per_request_seconds("nv_inference_queue_duration_us"), "{{model}} queue"),
           Query(per_request_seconds("nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                                     "nv_inference_compute_output_duration_us"), "{{model}} compute"),
           Query(per_request_seconds("nv_inference_request_duration_us"), "{{model}} request"))),
    Chart("Triton queue vs compute p50 and p99",
          "p50 and p99 of the queue time and of the model's execution, per model, from Triton's summaries "
          "(nv_inference_*_summary_us: exported with --metrics-config=summary_latencies=true, over Triton's own "
          "sliding window). The same four lines as \"Tail queue vs compute time\".", "s",
          (Query(triton_quantile(0.99, "nv_inference_queue_summary_us"), "{{model}} queue p99"),
           Query(triton_quantile(0.99, "nv_inference_compute_infer_summary_us"), "{{model}} compute p99"),
           Query(triton_quantile(0.5, "nv_inference_queue_summary_us"), "{{model}} queue p50"),
           Query(triton_quantile(0.5, "nv_inference_compute_infer_summary_us"), "{{model}} compute p50"))),
    Chart("Triton p99 per phase",
          "p99 of each phase of a request inside Triton, per model: queue, compute_input (copying the "
          "activation in), compute_infer, compute_output, and the whole request: which phase grew when the "
          "agents' uplink round trip did.", "s",
          (Query(triton_quantile(0.99, "nv_inference_queue_summary_us"), "{{model}} queue"),
           Query(triton_quantile(0.99, "nv_inference_compute_input_summary_us"), "{{model}} compute_input"),
           Query(triton_quantile(0.99, "nv_inference_compute_infer_summary_us"), "{{model}} compute_infer"),
           Query(triton_quantile(0.99, "nv_inference_compute_output_summary_us"), "{{model}} compute_output"),
           Query(triton_quantile(0.99, "nv_inference_request_summary_us"), "{{model}} request"))),
    Chart("Triton queue p95 per replica (the HPA's metric)",
          "The p95 queue time of each Triton replica, the largest over its models: what "
          "frosted_triton_queue_seconds_p95 (prometheus-adapter) gives the HPA. The red line is the HPA's "
          "target (20 ms, overlays/triton/triton-hpa.yaml): above it, replicas are added.", "s",
          (Query(triton_quantile(0.95, "nv_inference_queue_summary_us", "instance"), "{{instance}}"),),
          threshold=TRITON_QUEUE_P95_TARGET_SECONDS),
    Chart("Triton batch size by model",
          "Mean batch size: inferences over executions (nv_inference_count / nv_inference_exec_count). The "
          "ensemble reads 1 (it runs each request as it comes); PROFILE.tail-python's is the batch its "
          "dynamic batcher formed across cameras (max_batch_size 8). Compare with \"Tail batch size (tail "
          "side)\".", "short",
          (Query(f"sum by (model) (rate(nv_inference_count[{RATE}])) / "
                 f"sum by (model) (rate(nv_inference_exec_count[{RATE}]))", "{{model}}"),)),
    Chart("Triton pending requests by model",
          "Requests received and not yet executed (nv_inference_pending_request_count): a queue that stays "
          "above zero is a Triton short of compute.", "short",
          (Query("sum by (model) (nv_inference_pending_request_count)", "{{model}}"),)),
), collapsed=True)

ROWS = (EDGE, TAIL, TRITON)

WIDTH, HEIGHT = 12, 8  # two charts a row


# a table's columns: the labels; not the sample's time and value (always 1 for an _info series) or the job
TABLE_HIDDEN = {"Time": True, "Value": True, "job": True, "__name__": True}


def _panel(chart: Chart, panel_id: int) -> timeseries.Panel | heatmap.Panel | table.Panel:
    panel: timeseries.Panel | heatmap.Panel | table.Panel
    if chart.kind == "table":
        panel = (table.Panel().show_header(True)
                 .with_transformation(models.DataTransformerConfig(id_val="organize",
                                                                   options={"excludeByName": TABLE_HIDDEN})))
    elif chart.kind == "heatmap":
        panel = (heatmap.Panel().calculate(False)
                 .y_axis(heatmap.YAxisConfig().unit(chart.unit))
                 .color(heatmap.HeatmapColorOptions().mode(HeatmapColorMode.SCHEME).scheme("Oranges").fill("dark-orange").exponent(0.5)
                        .steps(64))
                 .cell_values(heatmap.CellValues().unit(chart.unit))
                 .show_legend())
    else:
        panel = (timeseries.Panel()
                 .legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                         .placement(common.LegendPlacement.BOTTOM).show_legend(True))
                 .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                          .sort(common.SortOrder.DESCENDING)))
        if chart.threshold is not None:
            panel = (panel.thresholds(builders.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps([
                        models.Threshold(value=None, color="green"),
                        models.Threshold(value=chart.threshold, color="red")]))
                     .thresholds_style(common_builders.GraphThresholdsStyleConfig()
                                       .mode(common.GraphThresholdsStyleMode.LINE)))
    panel = (panel.id(panel_id).title(chart.title).description(chart.description).datasource(DATASOURCE)
             .unit(chart.unit).height(HEIGHT).span(WIDTH))
    for ref, query in zip("ABCDEFGH", chart.queries, strict=False):
        target = (prometheus.Dataquery().ref_id(ref).datasource(DATASOURCE).expr(query.expr)
                  .legend_format(query.legend))
        if chart.kind == "heatmap":
            target = target.format(PromQueryFormat.HEATMAP)
        elif chart.kind == "table":  # the labels as they are now, not a history
            target = target.format(PromQueryFormat.TABLE).instant()
        panel = panel.with_target(target)
    return panel


def build() -> models.Dashboard:
    """The dashboard, as grafana-foundation-sdk's model."""
    dashboard = (
        builders.Dashboard(TITLE).uid(UID).editable()
        .description("Frosted: edge agents (per camera) and the cloud tail. Metrics: edge_agent/metrics.py, "
                     "cloud_tail/metrics.py. Generated by deploy/grafana/dashboard.py; provisioned from "
                     "deploy/grafana/.")
        .tags(["frosted"]).timezone("browser").tooltip(models.DashboardCursorSync.CROSSHAIR)
        .time("now-30m", "now").refresh("5s")
        .timepicker(builders.TimePicker().refresh_intervals(["5s", "10s", "30s", "1m", "5m"]))
        .annotation(builders.AnnotationQuery().name("Annotations & Alerts").built_in(1).enable(True).hide(True)
                    .icon_color("rgba(0, 211, 255, 1)").type("dashboard")
                    .datasource(models.DataSourceRef(type_val="grafana", uid="-- Grafana --")))
        .with_variable(builders.DatasourceVariable(DATASOURCE_VARIABLE).label("Data source").type("prometheus"))
        .with_variable(builders.QueryVariable("camera").label("Camera").datasource(DATASOURCE)
                       .query({"qryType": 1, "query": "label_values(frosted_edge_frames_total, camera)",
                               "refId": "PrometheusVariableQueryEditor-VariableQuery"})
                       .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .sort(models.VariableSort.ALPHABETICAL_ASC)
                       .multi(True).include_all(True).all_value(".*"))
    )
    panel_id = 0
    for row in ROWS:
        panel_id += 1
        row_builder = builders.Row(row.title).id(panel_id).collapsed(row.collapsed)
        panels = []
        for chart in row.charts:
            panel_id += 1
            panels.append(_panel(chart, panel_id))
        if row.collapsed:  # a collapsed row holds its panels; an open row's follow it on the dashboard
            for panel in panels:
                row_builder = row_builder.with_panel(panel)
            dashboard = dashboard.with_row(row_builder)
        else:
            dashboard = dashboard.with_row(row_builder)
            for panel in panels:
                dashboard = dashboard.with_panel(panel)
    return dashboard.build()


def render() -> str:
    """The dashboard's JSON, exactly as committed in frosted-dashboard.json."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.output.is_file() or args.output.read_text() != text:
            print(f"{args.output} is stale: run python deploy/grafana/dashboard.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
