"""The participants of a campaign, one CSV row each: what a crowd platform's payments and reviews need."""

import csv
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotate.models import Campaign
from annotate.services.campaigns import REPORT_COLUMNS, campaign_report


class Command(BaseCommand):
    help = (
        "Write a campaign's participant report as CSV: per participant the external id, judgments, qualification "
        "result, gold accuracy, active time (what the judging page measured with the page visible and the person "
        "playing or judging; what people are paid by), first and last activity, and status."
    )

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="the campaign's slug")
        parser.add_argument("--output", "-o", type=Path, default=None, help="a CSV file (default: standard output)")

    def handle(self, *args, campaign: str, output: Path | None, **options):
        found = Campaign.objects.filter(slug=campaign).first()
        if found is None:
            slugs = ", ".join(Campaign.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"{campaign}: no such campaign (there are: {slugs})")
        rows = campaign_report(found)
        handle = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
        try:
            writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        finally:
            if output:
                handle.close()
        if output:
            self.stderr.write(f"{len(rows)} participants of {found.name} written to {output}")
