from django.urls import path

from workers import api

urlpatterns = [
    path("imports/", api.ImportCreateView.as_view(), name="api-import-create"),
    path("jobs/", api.JobCreateView.as_view(), name="api-job-create"),
    path("jobs/<int:pk>/", api.JobDetailView.as_view(), name="api-job-detail"),
    path("pipelines/", api.PipelineCreateView.as_view(), name="api-pipeline-create"),
    path("pipelines/<int:pipeline_id>/", api.PipelineDetailView.as_view(), name="api-pipeline-detail"),
]
