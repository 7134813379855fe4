"""The API's default permission: an authenticated account that is not an external participant."""

from rest_framework.permissions import IsAuthenticated


class IsAnnotatorAccount(IsAuthenticated):
    """Signed in, and not a campaign-link participant: people who arrive by a crowd platform's link judge in
    the browser only, in their campaign (the API's next-pair is not campaign-scoped)."""

    message = "campaign participants judge in the browser; the API is for annotator accounts"

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        from annotate.services.campaigns import is_participant

        return not is_participant(request.user)
