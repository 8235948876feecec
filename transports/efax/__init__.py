"""eFax: the referral packet PDF sent to a fax number through a provider (email-to-fax gateway or Phaxio)."""
