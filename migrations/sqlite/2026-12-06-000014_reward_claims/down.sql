DROP TABLE reward_claims;
