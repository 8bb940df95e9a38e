"""The tags the campaign's run requests carry; the assets read the verdict round from them."""

TAG_CAMPAIGN = "staging-validation/campaign"
TAG_HOUR = "staging-validation/hour"  # the hour key of an hour run, the round id of a verdict run
TAG_PHASE = "staging-validation/phase"
# dagster.yaml allows one run per value of each lane tag: per campaign, one probe run at a time and one
# hour (ingestion or verdict) run at a time. Probes get their own lane so they start when their hour
# starts, never queued behind the previous hour's ingestion.
TAG_PROBE_LANE = "staging-validation/probe-lane"
TAG_HOUR_LANE = "staging-validation/hour-lane"
# One notification run at a time per campaign, so its alerts go out in the order they were raised.
TAG_NOTIFICATION_LANE = "staging-validation/notification-lane"
VERDICT_PHASE = "verdict"
ALERTS_PHASE = "alerts"
