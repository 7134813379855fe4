from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework.authtoken.models import Token

ANNOTATORS_GROUP = "annotators"


@dataclass(frozen=True)
class Account:
    username: str
    token: str
    created: bool


def annotator_create(*, username: str, password: str) -> Account:
    """Create an annotator (not staff) with an API token; an existing account keeps its password."""
    username = username.strip()
    if not username or len(username) > 150:
        raise ValueError("a user name is 1 to 150 characters")
    User = get_user_model()
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_password(password)
            user.save(update_fields=["password"])
        group, _ = Group.objects.get_or_create(name=ANNOTATORS_GROUP)
        user.groups.add(group)
        token, _ = Token.objects.get_or_create(user=user)
    return Account(username=username, token=token.key, created=created)
