"""Token authentication that also answers, in the same statement, whether the account is a campaign-link
participant (what ``IsAnnotatorAccount`` asks on every request)."""

from django.db.models import Exists, OuterRef
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication


class AnnotatorTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, as DRF's, in one statement with the participant flag."""

    def authenticate_credentials(self, key):
        from annotate.models import CampaignMember

        participant = CampaignMember.objects.filter(user=OuterRef("user_id")).exclude(external_id="")
        token = (
            self.get_model()
            .objects.select_related("user")
            .annotate(user_is_participant=Exists(participant))
            .filter(key=key)
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user.is_participant = token.user_is_participant  # read by campaigns.is_participant
        return (token.user, token)
