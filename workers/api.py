"""Staff API for jobs and pipelines: start an import or any other job, start the pipeline, follow them.

A job started here goes through the same form and service as the admin's "Start a job" page
(``workers.job_specs``: ``JOB_SPECS`` and ``JobConfigForm``; for exports and guided previews the admin's
``ExportForm`` and ``PreviewForm`` of ``workers.forms``), so the API accepts exactly what the admin accepts and
refuses it with the same reasons. The form is filled with the site's defaults first and the request's ``params``
over them.
"""

from __future__ import annotations

import json

from django import forms
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import RetrieveAPIView
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from workers.forms import ExportForm, PreviewForm
from workers.job_specs import JOB_SPECS, JobConfigForm, JSONValueField, TupleField
from workers.models import Job, Pipeline
from workers.services.imports import import_job_create
from workers.services.pipelines import PipelineBusy, pipeline_active, pipeline_stages, pipeline_start
from workers.services.previews import preview_job_create
from workers.services.snapshots import snapshot_job_create

IMPORTS_URL = "/api/v1/imports/"


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "status",
            "progress",
            "progress_text",
            "params",
            "metrics",
            "result",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


@extend_schema_field({"type": "string", "format": "binary"})
class UploadField(serializers.FileField):
    """A file part of a multipart request (the schema's default for a FileField, ``format: uri``, reads as a
    URL string to clients and to the fuzzer)."""


class ImportRequestSerializer(serializers.Serializer):
    manifest = UploadField(help_text="VideoAlign CSV or JSONL manifest")
    videos = serializers.ListField(
        child=UploadField(),
        allow_empty=True,
        required=False,
        default=list,
        help_text="the video files the manifest names (repeat the part)",
    )
    gold = serializers.BooleanField(required=False, default=False)
    overlap = serializers.IntegerField(required=False, min_value=1, max_value=50, allow_null=True, default=None)


class ImportCreateView(APIView):
    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": ImportRequestSerializer},
        responses={
            202: JobSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="each wrong field with its reasons"),
        },
        summary="Import pairs: a manifest and its videos (multipart), processed on the media queue",
    )
    def post(self, request):
        # A form body is a QueryDict, whose .dict() would keep just one of the videos: they come from getlist. An
        # empty body (no content type) parses to a plain dict.
        fields = request.data.dict() if hasattr(request.data, "dict") else dict(request.data)
        body = ImportRequestSerializer(data={**fields, "videos": request.FILES.getlist("videos")})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            with transaction.atomic():  # a refused upload leaves no job row behind
                job = import_job_create(
                    manifest=data["manifest"],
                    videos=data["videos"],
                    gold=data["gold"],
                    overlap=data["overlap"],
                    created_by=request.user,
                )
        except (ValueError, SuspiciousOperation) as exc:  # a file name that cannot be stored ("!!!", "..")
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobDetailView(RetrieveAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = JobSerializer
    queryset = Job.objects.all()


# --- starting a job -----------------------------------------------------------------------------------


class JobParamsError(Exception):
    """The request's params cannot make a job; ``errors`` maps each parameter (or ``non_field_errors``) to reasons."""

    def __init__(self, errors: dict):
        super().__init__(errors)
        self.errors = errors


def _export_create(form, user) -> Job:
    return snapshot_job_create(params=form.job_params(), created_by=user)


def _preview_create(form, user) -> Job:
    return preview_job_create(**form.preview_inputs(), created_by=user)


def job_form_and_create(kind: str):
    """(make_form(data), create(form, user)) for a job kind started through the API: the admin's forms."""
    if kind == Job.Kind.EXPORT:
        return ExportForm, _export_create
    if kind == Job.Kind.PREVIEW:
        return PreviewForm, _preview_create
    spec = JOB_SPECS[kind]
    return (lambda data=None: JobConfigForm(spec, data)), (lambda form, user: form.create_job(created_by=user))


def _hidden_fields(kind: str) -> frozenset[str]:
    spec = JOB_SPECS.get(kind)
    return spec.hidden if spec else frozenset()


def _flatten(values: dict, fields, *, kind: str, prefix: str = "") -> tuple[dict, dict]:
    """``{"model": {"lora_rank": 16}}`` → ``{"model.lora_rank": 16}`` (the form's dotted names); dotted keys
    pass as they are. Returns (values by field name, errors by the name that is not a field)."""
    flat, errors = {}, {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if name in fields:
            flat[name] = value
        elif isinstance(value, dict) and any(field.startswith(f"{name}.") for field in fields):
            inner, inner_errors = _flatten(value, fields, kind=kind, prefix=f"{name}.")
            flat.update(inner)
            errors.update(inner_errors)
        elif name in _hidden_fields(kind) or name.split(".")[0] in _hidden_fields(kind):
            errors[name] = [f"the worker sets {name} itself; leave it out"]
        else:
            errors[name] = [f"not a parameter of a {kind} job; it takes {', '.join(fields)}"]
    return flat, errors


def _form_value(field: forms.Field, value):
    """A JSON value as the admin's widget would have posted it: text, a list of ids for a multiple choice, JSON
    text for a JSON-valued config field, comma-separated items for a tuple, true/false for a checkbox."""
    if hasattr(value, "_meta"):  # an initial row
        value = value.pk
    if isinstance(field, forms.ModelMultipleChoiceField):
        return [] if value is None else [str(item) for item in value]
    if isinstance(field, JSONValueField):  # its input is JSON text; a string here is a value, not JSON text
        return json.dumps(value)
    if isinstance(field, TupleField):
        return field.prepare_value(value)
    if value is None or isinstance(value, str) or isinstance(field, forms.BooleanField):
        return value
    return str(value)


def _model_reference(field: forms.ModelChoiceField, value, name: str):
    """A row chosen by id, or by name (``"snapshot": "20261101-020000-ab12cd"``): its id."""
    if not isinstance(value, str) or value.strip().isdigit() or not value:
        return value
    if not hasattr(field.queryset.model, "name"):
        raise JobParamsError({name: [f"{value!r}: give the id of one"]})
    found = field.queryset.filter(name=value).values_list("pk", flat=True).first()
    if found is None:
        label = field.queryset.model._meta.verbose_name
        raise JobParamsError(
            {name: [f"no {label} named {value!r} (among those this input takes); give its id or its exact name"]}
        )
    return found


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _type_error(field: forms.Field, value) -> str | None:
    """What is wrong with the JSON type of ``value`` for ``field`` (the form would coerce it quietly, or fail on
    it), or None."""
    if _has_nul(value):
        return "NUL characters (\\u0000) cannot be stored; leave them out"
    if isinstance(field, JSONValueField):
        return None
    if isinstance(field, forms.BooleanField):
        return None if isinstance(value, bool) else f"{value!r}: give true or false"
    if isinstance(field, forms.ModelMultipleChoiceField):
        if not isinstance(value, list) or not all(
            isinstance(item, (int, str)) and not isinstance(item, bool) for item in value
        ):
            return f"{value!r}: give a list of ids, e.g. [1, 2]"
        return None
    if isinstance(field, TupleField):
        if isinstance(value, list) and all(isinstance(item, (int, float, str)) for item in value):
            return None
    if isinstance(value, (list, dict)):
        return f"{json.dumps(value)[:80]}: give one value, not {'a list' if isinstance(value, list) else 'an object'}"
    return None


def job_form_bound(kind: str, params: dict):
    """The kind's admin form, filled with its defaults and ``params`` over them, validated. Raises
    ``JobParamsError`` naming each parameter that is unknown or wrong."""
    make_form, _ = job_form_and_create(kind)
    data: dict = {}
    form = make_form(data)  # bound to ``data``, which is filled below (a form keeps the dict it is given)
    flat, errors = _flatten(params, form.fields, kind=kind)
    for name, value in flat.items():
        if problem := _type_error(form.fields[name], value):
            errors[name] = [problem]
    data.update(
        {name: _form_value(field, form.get_initial_for_field(field, name)) for name, field in form.fields.items()}
    )
    for name, value in flat.items():
        if name in errors:
            continue  # the form checks the rest, so one answer names every wrong parameter
        field = form.fields[name]
        if isinstance(field, forms.ModelChoiceField) and not isinstance(field, forms.ModelMultipleChoiceField):
            try:
                value = _model_reference(field, value, name)
            except JobParamsError as exc:
                errors.update(exc.errors)
                continue
        data[name] = _form_value(field, value)
    if not form.is_valid():
        errors.update(
            {
                ("non_field_errors" if name == "__all__" else name): list(messages)
                for name, messages in form.errors.items()
                if name not in errors
            }
        )
    if errors:
        raise JobParamsError(errors)
    return form


def job_start(*, kind: str, params: dict, user) -> Job:
    """Validate ``params`` with the kind's admin form and queue the job through the kind's service. Raises
    ``JobParamsError`` naming what to fix."""
    form = job_form_bound(kind, params)
    _, create = job_form_and_create(kind)
    try:
        with transaction.atomic():
            return create(form, user)
    except ValueError as exc:  # the service refused the inputs; GenerationInputError says which one
        field = getattr(exc, "field", None)
        raise JobParamsError({field if field in form.fields else "non_field_errors": [str(exc)]}) from None


class JobCreateRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=Job.Kind.choices,
        error_messages={"invalid_choice": f'"{{input}}" is not a job kind; choose one of {", ".join(Job.Kind.values)}'},
        help_text=f"the job to start: {', '.join(kind for kind in Job.Kind.values if kind != Job.Kind.IMPORT)} "
        f"(imports upload files: POST them to {IMPORTS_URL})",
    )
    params = serializers.DictField(
        required=False,
        default=dict,
        help_text="what the admin's form for this kind asks: the rows it reads by id or name (snapshot, "
        "reward_version, policy_version, latent_reward_version; batches for an export) and any config "
        "value to change from the site's defaults, nested as in the config dataclass "
        '({"model": {"lora_rank": 16}}) or dotted ("model.lora_rank"). Export: name, judged_from, '
        "judged_until, batches, min_judgments, min_agreement, no_majority, include_flagged, "
        "include_excluded_annotators, include_gold, bundle_videos. A parameter the kind does not take "
        "is refused, naming it and listing those it takes.",
    )

    def validate_kind(self, kind: str) -> str:
        if kind == Job.Kind.IMPORT:
            raise serializers.ValidationError(
                f"an import uploads a manifest and its videos: POST them as multipart/form-data to {IMPORTS_URL}"
            )
        return kind


JOB_EXAMPLES = [
    OpenApiExample(
        "reward model",
        request_only=True,
        value={"kind": "reward", "params": {"snapshot": 3, "epochs": 2, "model": {"lora_rank": 16}}},
        description="Train a reward model on training snapshot 3 (a snapshot's name works too), two epochs, "
        "LoRA rank 16; every other value is the site's default.",
    ),
    OpenApiExample(
        "export",
        request_only=True,
        value={
            "kind": "export",
            "params": {
                "min_judgments": 2,
                "min_agreement": 0.6,
                "judged_from": "2026-11-01T00:00:00Z",
                "batches": [1, 2],
            },
        },
        description="A training snapshot of batches 1 and 2: pairs with at least two judgments since 1 November, "
        "every label backed by 60 % of them.",
    ),
    OpenApiExample(
        "Flow-DPO",
        request_only=True,
        value={
            "kind": "flow_dpo",
            "params": {"snapshot": "20261101-020000-ab12cd", "reward_version": 4, "beta": 1000.0},
        },
    ),
    OpenApiExample(
        "generate pairs",
        request_only=True,
        value={"kind": "generate", "params": {"policy_version": 7, "reward_version": 4, "pairs": 32}},
    ),
    OpenApiExample(
        "queued",
        response_only=True,
        status_codes=["202"],
        value={
            "id": 12,
            "kind": "reward",
            "status": "queued",
            "progress": 0.0,
            "progress_text": "",
            "params": {"snapshot_id": 3, "config": {"epochs": 2, "model": {"lora_rank": 16}}},
            "metrics": {},
            "result": {},
            "error": "",
            "created_at": "2026-11-02T09:00:00Z",
            "started_at": None,
            "finished_at": None,
        },
    ),
    OpenApiExample(
        "a wrong parameter",
        response_only=True,
        status_codes=["400"],
        value={
            "params": {
                "model.lora_rank": ["Enter a whole number."],
                "snapshot": [
                    "no dataset snapshot named 'nope' (among those this input takes); give its id or its exact name"
                ],
            }
        },
    ),
    OpenApiExample(
        "an unknown kind",
        response_only=True,
        status_codes=["400"],
        value={
            "kind": [
                '"train" is not a job kind; choose one of import, export, reward, sft, flow_dpo, flow_rwr, '
                "latent_reward, generate, preview"
            ]
        },
    ),
]


class JobCreateView(APIView):
    permission_classes = [IsAdminUser]
    parser_classes = [JSONParser]

    @extend_schema(
        request=JobCreateRequestSerializer,
        responses={
            202: JobSerializer,
            400: OpenApiResponse(
                OpenApiTypes.OBJECT, description='what to fix: {"kind": [...]} or {"params": {"<parameter>": [...]}}'
            ),
        },
        examples=JOB_EXAMPLES,
        summary="Start a job (staff): the admin's 'Start a job' and 'Export a snapshot' forms as JSON",
    )
    def post(self, request):
        body = JobCreateRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            job = job_start(kind=body.validated_data["kind"], params=body.validated_data["params"], user=request.user)
        except JobParamsError as exc:
            return Response({"params": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


# --- the pipeline -------------------------------------------------------------------------------------


class PipelineStageSerializer(serializers.Serializer):
    stage = serializers.CharField(help_text="export, reward, align or generate")
    kind = serializers.CharField(help_text="the job kind that runs it")
    job = serializers.IntegerField(
        allow_null=True, help_text="its job's id (GET /api/v1/jobs/{id}/); null until the stage starts"
    )
    status = serializers.CharField(
        help_text="the job's status; pending before it starts, not run when the pipeline ended first"
    )
    progress = serializers.FloatField()


class PipelineSerializer(serializers.ModelSerializer):
    stages = serializers.SerializerMethodField()

    class Meta:
        model = Pipeline
        fields = [
            "id",
            "status",
            "stage",
            "is_active",
            "params",
            "trigger",
            "reason",
            "created_at",
            "finished_at",
            "stages",
        ]

    @extend_schema_field(PipelineStageSerializer(many=True))
    def get_stages(self, pipeline: Pipeline) -> list[dict]:
        waiting = "pending" if pipeline.is_active else "not run"
        return [
            {
                "stage": stage["name"],
                "kind": stage["kind"],
                "job": job.pk if job else None,
                "status": job.status if job else waiting,
                "progress": job.progress if job else 0.0,
            }
            for stage in pipeline_stages(pipeline)
            for job in [stage["job"]]
        ]


class PipelineStartSerializer(serializers.Serializer):
    force = serializers.BooleanField(
        required=False, default=False, help_text="run even if too few judgments arrived since the last snapshot"
    )
    alignment_method = serializers.ChoiceField(
        choices=["dpo", "rwr", "grpo"],
        required=False,
        help_text="Flow-DPO, Flow-RWR or Flow-GRPO; default VIDPREF_ALIGNMENT_METHOD",
    )
    generate_pairs = serializers.IntegerField(
        min_value=1,
        max_value=100_000,
        required=False,
        help_text="new pairs queued for labelling; default VIDPREF_PIPELINE_GENERATE_PAIRS",
    )


class PipelineBusySerializer(serializers.Serializer):
    detail = serializers.CharField()
    pipeline_id = serializers.IntegerField(allow_null=True, help_text="the pipeline still going")


PIPELINE_EXAMPLE = {
    "id": 5,
    "status": "queued",
    "stage": "",
    "is_active": True,
    "params": {
        "min_new_judgments": 500,
        "alignment_method": "dpo",
        "generate_pairs": 64,
        "reward_config": {},
        "alignment_config": {},
    },
    "trigger": "api",
    "reason": "",
    "created_at": "2026-11-02T09:00:00Z",
    "finished_at": None,
    "stages": [
        {"stage": "export", "kind": "export", "job": None, "status": "pending", "progress": 0.0},
        {"stage": "reward", "kind": "reward", "job": None, "status": "pending", "progress": 0.0},
        {"stage": "align", "kind": "flow_dpo", "job": None, "status": "pending", "progress": 0.0},
        {"stage": "generate", "kind": "generate", "job": None, "status": "pending", "progress": 0.0},
    ],
}


class PipelineCreateView(APIView):
    permission_classes = [IsAdminUser]
    parser_classes = [JSONParser]

    @extend_schema(
        request=PipelineStartSerializer,
        responses={
            202: OpenApiResponse(
                PipelineSerializer, description="queued: export → reward → alignment → generate, each stage a job"
            ),
            200: OpenApiResponse(
                PipelineSerializer,
                description="not started (status skipped): too few new "
                "judgments since the last snapshot, as its reason says; force runs it anyway",
            ),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="each wrong field with its reasons"),
            409: OpenApiResponse(PipelineBusySerializer, description="a pipeline is still going; one runs at a time"),
        },
        examples=[
            OpenApiExample("force a run", request_only=True, value={"force": True}),
            OpenApiExample(
                "Flow-RWR, 32 new pairs",
                request_only=True,
                value={"force": False, "alignment_method": "rwr", "generate_pairs": 32},
            ),
            OpenApiExample("queued", response_only=True, status_codes=["202"], value=PIPELINE_EXAMPLE),
            OpenApiExample(
                "busy",
                response_only=True,
                status_codes=["409"],
                value={
                    "detail": "pipeline #5 (running, reward) is still going; one pipeline runs at a time",
                    "pipeline_id": 5,
                },
            ),
        ],
        summary="Start the pipeline (staff): export → reward model → Flow-DPO/RWR → new pairs",
    )
    def post(self, request):
        body = PipelineStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        params = {key: data[key] for key in ("alignment_method", "generate_pairs") if key in data}
        active = pipeline_active()
        try:
            if active is not None:
                raise PipelineBusy(f"{active} is still going; one pipeline runs at a time")
            pipeline = pipeline_start(params=params, created_by=request.user, trigger="api", force=data["force"])
        except PipelineBusy as exc:
            active = active or pipeline_active()
            return Response(
                {"detail": str(exc), "pipeline_id": active.pk if active else None}, status=status.HTTP_409_CONFLICT
            )
        skipped = pipeline.status == Pipeline.Status.SKIPPED
        return Response(
            PipelineSerializer(pipeline).data, status=status.HTTP_200_OK if skipped else status.HTTP_202_ACCEPTED
        )


@extend_schema(
    examples=[
        OpenApiExample(
            "running",
            response_only=True,
            value={
                **PIPELINE_EXAMPLE,
                "status": "running",
                "stage": "reward",
                "stages": [
                    {"stage": "export", "kind": "export", "job": 40, "status": "succeeded", "progress": 1.0},
                    {"stage": "reward", "kind": "reward", "job": 41, "status": "running", "progress": 0.35},
                    {"stage": "align", "kind": "flow_dpo", "job": None, "status": "pending", "progress": 0.0},
                    {"stage": "generate", "kind": "generate", "job": None, "status": "pending", "progress": 0.0},
                ],
            },
        )
    ],
    summary="A pipeline: its status and each stage's job",
)
class PipelineDetailView(RetrieveAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = PipelineSerializer
    queryset = Pipeline.objects.all()
    lookup_url_kwarg = "pipeline_id"
