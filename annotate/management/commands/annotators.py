import secrets

from django.core.management.base import BaseCommand, CommandError

from annotate.services.accounts import annotator_create


class Command(BaseCommand):
    help = "Manage annotator accounts. `annotators add NAME…` creates each and prints its password and API token."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="create annotator accounts (existing ones get a fresh token)")
        add.add_argument("names", nargs="+", metavar="NAME")
        add.add_argument("--password", default=None, help="one password for all (default: a random one each)")

    def handle(self, *args, action: str, **options):
        if action != "add":
            raise CommandError(f"unknown action {action!r}")
        for name in options["names"]:
            password = options["password"] or secrets.token_urlsafe(9)
            try:
                account = annotator_create(username=name, password=password)
            except ValueError as exc:
                raise CommandError(f"{name}: {exc}") from exc
            shown = password if account.created else "(unchanged)"
            self.stdout.write(f"{name}\tpassword: {shown}\ttoken: {account.token}")
