"""Token authentication that also answers, in the same statement, whether the account is a campaign-link
participant (what ``IsAnnotatorAccount`` asks on every request)."""

import functools

from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from annotate.rows import from_row, select_list


class AnnotatorTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, as DRF's, in one statement with the participant flag."""

    def authenticate_credentials(self, key):
        user = _user_by_token(key)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (user, key)


@functools.cache
def _token_sql() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from annotate.models import CampaignMember

    User = get_user_model()
    return (
        f'SELECT {select_list(User, "u")[1]}, EXISTS (SELECT 1 FROM "{CampaignMember._meta.db_table}" m '
        "WHERE m.user_id = u.id AND m.external_id <> '') "
        f'FROM "{Token._meta.db_table}" t JOIN "{User._meta.db_table}" u ON u.id = t.user_id WHERE t.key = %s'
    )


def _user_by_token(key: str):
    """The token's user with ``is_participant`` set, or None: one prepared statement, no query compiled per
    request (the API's every request starts here)."""
    from django.contrib.auth import get_user_model

    with connection.cursor() as cursor:
        cursor.execute(_token_sql(), [key])
        row = cursor.fetchone()
    if row is None:
        return None
    user = from_row(get_user_model(), row[:-1])
    user.is_participant = row[-1]  # read by campaigns.is_participant
    return user
