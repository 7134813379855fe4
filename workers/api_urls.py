from django.urls import path

from workers import api

urlpatterns = [
    path("imports/", api.ImportCreateView.as_view(), name="api-import-create"),
    path("jobs/<int:pk>/", api.JobDetailView.as_view(), name="api-job-detail"),
]
