from django.urls import path

from annotate import media_views, views

app_name = "annotate"
urlpatterns = [
    path("", views.home, name="home"),
    path("assignments/<int:assignment_id>/judge/", views.judge, name="judge"),
    path("assignments/<int:assignment_id>/skip/", views.skip, name="skip"),
    path("assignments/<int:assignment_id>/heartbeat/", views.heartbeat, name="heartbeat"),
    path("assignments/<int:assignment_id>/undo/", views.undo, name="undo"),
    path("c/<slug:slug>/", views.campaign_entry, name="campaign"),
    path("c/<slug:slug>/guidelines/", views.campaign_guidelines, name="campaign_guidelines"),
    path("guidelines/", views.guidelines, name="guidelines"),
    path("history/", views.history, name="history"),
    path("media/videos/<int:video_id>/", media_views.video_file, name="video"),
    path("media/posters/<int:video_id>/", media_views.video_poster, name="poster"),
]
