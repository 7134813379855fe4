"""Staff API for jobs: start an import, follow any job's progress."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import RetrieveAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from workers.models import Job
from workers.uploads import import_job_create


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "progress_text", "params", "metrics", "result", "error",
                  "created_at", "started_at", "finished_at"]


class ImportRequestSerializer(serializers.Serializer):
    manifest = serializers.FileField(help_text="VideoAlign CSV or JSONL manifest")
    videos = serializers.ListField(child=serializers.FileField(), allow_empty=True, required=False, default=list)
    gold = serializers.BooleanField(required=False, default=False)
    overlap = serializers.IntegerField(required=False, min_value=1, max_value=50, allow_null=True, default=None)


class ImportCreateView(APIView):
    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": ImportRequestSerializer}, responses={202: JobSerializer})
    def post(self, request):
        # multipart only: request.data is a QueryDict, whose .dict() would keep just one of the videos
        body = ImportRequestSerializer(data={**request.data.dict(), "videos": request.FILES.getlist("videos")})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            job = import_job_create(
                manifest=data["manifest"], videos=data["videos"], gold=data["gold"], overlap=data["overlap"],
                created_by=request.user,
            )
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobDetailView(RetrieveAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = JobSerializer
    queryset = Job.objects.all()
