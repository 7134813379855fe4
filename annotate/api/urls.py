from django.urls import path

from annotate.api import views

urlpatterns = [
    path("assignments/next/", views.NextAssignmentView.as_view(), name="api-assignment-next"),
    path("assignments/<int:assignment_id>/heartbeat/", views.HeartbeatView.as_view(), name="api-assignment-heartbeat"),
    path("assignments/<int:assignment_id>/skip/", views.SkipView.as_view(), name="api-assignment-skip"),
    path("assignments/<int:assignment_id>/judgment/", views.JudgmentView.as_view(), name="api-assignment-judgment"),
    path("stats/agreement/", views.AgreementStatsView.as_view(), name="api-stats-agreement"),
]
