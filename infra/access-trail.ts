/**
 * An access trail without secrets (optional, `tokenFetchAccessTrail`): a
 * CloudTrail trail that records only the Lambda data events of one function,
 * management events off, into a bucket of its own. Each record says which IAM
 * principal called (`userIdentity`), which function (`resources`), when
 * (`eventTime`), from where (`sourceIPAddress`, `userAgent`) and whether
 * Lambda refused the call (`errorCode`). Lambda data events never carry the
 * invocation payload or the function's answer, so neither a connection id nor
 * a token reaches the trail.
 */
import { ArnFormat, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as cloudtrail from 'aws-cdk-lib/aws-cloudtrail';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export interface FunctionAccessTrailProps {
  /** The trail's name; the bucket policy admits only this trail. */
  readonly trailName: string;
  /** Physical name of the one function whose invocations are recorded. */
  readonly functionName: string;
  /** Days a log file is kept before it expires. */
  readonly retentionDays: number;
}

/** How long a deleted or overwritten log file can still be recovered from its previous version. */
export const NONCURRENT_VERSION_DAYS = 30;

export class FunctionAccessTrail extends Construct {
  readonly bucket: s3.Bucket;
  readonly trail: cloudtrail.CfnTrail;
  /** The ARN the trail's selector names: the function as callers invoke it. */
  readonly functionArn: string;

  constructor(scope: Construct, id: string, props: FunctionAccessTrailProps) {
    super(scope, id);
    const stack = Stack.of(this);
    // Built from the name, not taken from the function: the function lives in the stateless
    // stack, which depends on this one, and the trail must outlive its redeployments.
    this.functionArn = stack.formatArn({
      service: 'lambda',
      resource: 'function',
      resourceName: props.functionName,
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    const trailArn = stack.formatArn({
      service: 'cloudtrail',
      resource: 'trail',
      resourceName: props.trailName,
    });

    // The records hold principal ARNs, source IPs and times, no secret: S3-managed keys
    // encrypt them at rest without a second KMS key (whose policy would have to admit CloudTrail).
    this.bucket = new s3.Bucket(this, 'Bucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      versioned: true,
      lifecycleRules: [
        {
          id: 'ExpireLogFiles',
          expiration: Duration.days(props.retentionDays),
          noncurrentVersionExpiration: Duration.days(NONCURRENT_VERSION_DAYS),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
        // Expiry leaves delete markers behind; once their versions are gone they go too.
        { id: 'RemoveExpiredDeleteMarkers', expiredObjectDeleteMarker: true },
      ],
      // Audit data: kept when the stack goes or the setting is switched off (expiry still applies).
      removalPolicy: RemovalPolicy.RETAIN,
    });
    Validations.of(this.bucket.node.defaultChild as s3.CfnBucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        "This bucket is itself an access log: only this trail may write to it (bucket policy with aws:SourceArn), and CloudTrail log file validation (digest files) shows any file changed or removed afterwards. The broker keeps its other access logs in CloudWatch Logs, where S3 cannot deliver server access logs, and a second bucket only to log reads of this one would need the same exception; changes to the bucket and its policy are management events in the account's CloudTrail event history.",
    });

    // What CloudTrail needs to deliver, and only for this trail (confused-deputy protection).
    const cloudTrail = new iam.ServicePrincipal('cloudtrail.amazonaws.com');
    this.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'TrailChecksBucketAcl',
        principals: [cloudTrail],
        actions: ['s3:GetBucketAcl'],
        resources: [this.bucket.bucketArn],
        conditions: { StringEquals: { 'aws:SourceArn': trailArn } },
      }),
    );
    this.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'TrailWritesLogFiles',
        principals: [cloudTrail],
        actions: ['s3:PutObject'],
        resources: [this.bucket.arnForObjects(`AWSLogs/${stack.account}/*`)],
        conditions: {
          StringEquals: { 's3:x-amz-acl': 'bucket-owner-full-control', 'aws:SourceArn': trailArn },
        },
      }),
    );

    this.trail = new cloudtrail.CfnTrail(this, 'Trail', {
      trailName: props.trailName,
      s3BucketName: this.bucket.bucketName,
      isLogging: true,
      // The function is regional; management and global service events are the account trail's business.
      isMultiRegionTrail: false,
      includeGlobalServiceEvents: false,
      enableLogFileValidation: true,
      advancedEventSelectors: [
        {
          name: `Invocations of ${props.functionName} only`,
          fieldSelectors: [
            { field: 'eventCategory', equalTo: ['Data'] },
            { field: 'resources.type', equalTo: ['AWS::Lambda::Function'] },
            { field: 'resources.ARN', equalTo: [this.functionArn] },
          ],
        },
      ],
    });
    // CloudTrail checks the bucket policy when the trail is created.
    if (this.bucket.policy) this.trail.node.addDependency(this.bucket.policy);
    // Switching the setting off must stop the charges: the trail goes, the bucket stays.
    this.trail.applyRemovalPolicy(RemovalPolicy.DESTROY);
  }
}
